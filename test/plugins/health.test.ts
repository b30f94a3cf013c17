// Health and readiness (issue 10): /health answers while the process runs; /ready turns unready when
// the rate-limit store is down and the policy is `closed`, and ready again when it returns — found
// by the probe itself, with no other traffic.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { gateway, gatewayServerOptions, type RateLimitOptions } from '../../lib/index.js'
import { startTestRedis, type TestRedis } from '../../lib/testing/index.js'
import { SECRET } from '../helpers/tokens.js'

async function build (t: Test, rateLimit: RateLimitOptions | false = false, health: object | boolean = true): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: { jwt: { secret: SECRET, audience: 'api' } }, rateLimit, health } as never)
  t.teardown(async () => { await app.close() })
  return app
}

async function withRedis (t: Test, onStoreError: 'closed' | 'local'): Promise<{ app: FastifyInstance, redis: TestRedis }> {
  const redis = await startTestRedis()
  const client = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
  client.on('error', () => {}) // expected while Redis is down
  await new Promise((resolve) => client.once('ready', resolve))
  t.teardown(async () => { client.disconnect(); await redis.stop() })
  const app = await build(t, { store: client, onStoreError, storeTimeout: 100, perConsumer: { max: 100, window: '1m' } })
  return { app, redis }
}

/** Polls /ready until it answers `status`, within `withinMs`. */
async function readyBecomes (app: FastifyInstance, status: number, withinMs: number): Promise<{ statusCode: number, body: Record<string, unknown> }> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const response = await app.inject({ url: '/ready' })
    if (response.statusCode === status || Date.now() > deadline) return { statusCode: response.statusCode, body: response.json() }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

t.test('/health and /ready answer without a credential and without limits', async (t) => {
  const app = await build(t, { perConsumer: { max: 1, window: '1m' } })
  for (let i = 0; i < 3; i++) {
    const live = await app.inject({ url: '/health' })
    t.equal(live.statusCode, 200)
    t.same(live.json(), { status: 'ok' })
    t.equal(live.headers.ratelimit, undefined, 'exempt from limits')
    t.equal(live.headers['cache-control'], 'no-store')
  }
  const ready = await app.inject({ url: '/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', checks: {} }, 'nothing to check with the memory store')
  t.equal((await app.inject({ url: '/other' })).statusCode, 404, 'unknown paths stay 404')
})

t.test('onStoreError closed: unready while Redis is down, ready again when it returns', async (t) => {
  const { app, redis } = await withRedis(t, 'closed')
  const up = await app.inject({ url: '/ready' })
  t.equal(up.statusCode, 200)
  t.same(up.json().checks, { rateLimitStore: 'up' })

  redis.pause() // accepts, never answers: the probe is cut off at storeTimeout
  const started = Date.now()
  const down = await app.inject({ url: '/ready' })
  t.ok(Date.now() - started < 1_000, `answered in ${Date.now() - started} ms while Redis hangs`)
  t.equal(down.statusCode, 503)
  t.equal(down.json().code, 'GATEWAY_ERR_NOT_READY')
  t.equal(down.json().detail, 'rateLimitStore: down')

  redis.resume()
  const back = await readyBecomes(app, 200, 5_000)
  t.equal(back.statusCode, 200, 'ready again with no request but the probe')
  t.same(back.body.checks, { rateLimitStore: 'up' })

  await redis.kill()
  t.equal((await readyBecomes(app, 503, 5_000)).statusCode, 503, 'Redis killed: unready')
  await redis.restart()
  t.equal((await readyBecomes(app, 200, 10_000)).statusCode, 200, 'Redis restarted: ready')
})

t.test('onStoreError local: Redis down leaves the instance ready (limits count in memory)', async (t) => {
  const { app, redis } = await withRedis(t, 'local')
  redis.pause()
  const response = await app.inject({ url: '/ready' })
  t.equal(response.statusCode, 200)
  t.same(response.json(), { status: 'ready', checks: { rateLimitStore: 'down' } })
  redis.resume()
})

t.test('paths are configurable; invalid health options are refused at registration', async (t) => {
  const app = await build(t, false, { path: '/livez', readyPath: '/readyz' })
  t.equal((await app.inject({ url: '/livez' })).statusCode, 200)
  t.equal((await app.inject({ url: '/readyz' })).statusCode, 200)
  t.equal((await app.inject({ url: '/health' })).statusCode, 404, 'nothing at the default path')
  for (const health of [{ path: 'health' }, { path: '/x', readyPath: '/x' }, { extra: true }]) {
    const bad = Fastify()
    await t.rejects(async () => { await bad.register(gateway, { auth: false, health } as never) }, { code: 'GATEWAY_ERR_INVALID_OPTION' }, JSON.stringify(health))
    await bad.close()
  }
})
