// Rate limits with a real Redis store (SECURITY.md § G): exact counts under concurrency and across
// instances, the failure policies when Redis is killed or paused, recovery without a restart, and
// the store's state changes logged once. (The memory store: rate-limit.test.ts.)
import t, { type Test } from 'tap'
import { createHash, randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import { gateway, gatewayServerOptions, type RateLimitOptions, type RateLimitPolicy } from '../../lib/index.js'
import { createTestUpstream, startTestRedis, type TestRedis } from '../../lib/testing/index.js'

const KEYS = { alpha: 'k3y-Alpha-0123456789', beta: 'k3y-Beta-0123456789', gamma: 'k3y-Gamma-0123456789' }
type Who = keyof typeof KEYS
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')
const apiKeys = Object.fromEntries(Object.entries(KEYS).map(([id, key]) => [digest(key), { id, scopes: ['read'] }]))
const RETRY_MS = 200 // storeRetryInterval in the failure tests; waits below are this + a margin
const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

/** Resolve once the client is ready; reject after `timeoutMs` (ioredis reconnects by itself). */
async function ready (client: Redis, timeoutMs = 10_000): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady)
      reject(new Error(`redis client not ready within ${timeoutMs} ms (status ${client.status})`))
    }, timeoutMs)
    function onReady (): void {
      clearTimeout(timer)
      resolve()
    }
    client.once('ready', onReady)
  })
}

interface Env {
  redis: TestRedis
  keyPrefix: string
  clients: Redis[]
  build: (rateLimit: Omit<RateLimitOptions, 'store' | 'keyPrefix'>, serviceLimit?: RateLimitPolicy, logs?: string[], clientOptions?: RedisOptions) => Promise<FastifyInstance>
}

/** A Redis of its own per test; every gateway built gets its own client, as separate processes would. */
async function setup (t: Test): Promise<Env> {
  const redis = await startTestRedis()
  const clients: Redis[] = []
  const apps: FastifyInstance[] = []
  t.teardown(async () => {
    for (const app of apps) await app.close()
    for (const client of clients) client.disconnect() // the gateway never closes the caller's client
    await redis.stop() // sends SIGCONT first when paused
  })
  const keyPrefix = `test-${randomUUID()}:`
  async function build (rateLimit: Omit<RateLimitOptions, 'store' | 'keyPrefix'>, serviceLimit?: RateLimitPolicy, logs?: string[], clientOptions: RedisOptions = {}): Promise<FastifyInstance> {
    const client = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1, ...clientOptions })
    client.on('error', () => {}) // connection errors while Redis is down are expected here
    clients.push(client)
    await ready(client, 5_000)
    const logger = logs === undefined ? false : { level: 'info', stream: { write: (line: string) => { logs.push(line) } } }
    const app = Fastify({ logger, ...gatewayServerOptions() })
    apps.push(app)
    await app.register(gateway, {
      auth: { apiKeys: { keys: apiKeys } },
      rateLimit: { store: client, keyPrefix, ...rateLimit },
      services: { api: { upstream: upstream.url, prefix: '/api', ...(serviceLimit === undefined ? {} : { rateLimit: serviceLimit }) } }
    })
    await app.ready()
    return app
  }
  return { redis, keyPrefix, clients, build }
}

async function call (app: FastifyInstance, who: Who = 'alpha'): Promise<{ response: LightMyRequestResponse, ms: number }> {
  const started = Date.now()
  const response = await app.inject({ url: '/api/x', headers: { 'x-api-key': KEYS[who] } })
  return { response, ms: Date.now() - started }
}

/** No stack, no store name, no socket error, no address of the store in what the client sees. */
function assertNoInternals (t: Test, response: LightMyRequestResponse, redis: TestRedis, label: string): void {
  t.notMatch(response.body, /\n\s+at |redis|ECONNREFUSED|127\.0\.0\.1/i, `${label}: no internal detail`)
  t.notMatch(response.body, new RegExp(`(?<![0-9a-f])${redis.port}(?![0-9a-f])`, 'i'), `${label}: no store port`)
  t.notMatch(JSON.stringify(response.headers), /redis|ECONNREFUSED/i, `${label}: no internal detail in headers`)
}

function assertLimited (t: Test, response: LightMyRequestResponse, label: string): void {
  t.equal(response.statusCode, 429, label)
  t.equal(response.json().code, 'GATEWAY_ERR_RATE_LIMITED', label)
  t.match(response.headers['retry-after'], /^[1-9]\d*$/, `${label}: Retry-After in whole seconds ≥ 1`)
  t.type(response.headers.ratelimit, 'string', `${label}: RateLimit`)
  t.type(response.headers['ratelimit-policy'], 'string', `${label}: RateLimit-Policy`)
}

t.test('max = 10, 50 parallel requests from one consumer → exactly 10 reach the upstream, counted in Redis', async (t) => {
  const { build, clients, keyPrefix } = await setup(t)
  // closed: a store failure cannot pass for a correct count made in local memory
  const app = await build({ onStoreError: 'closed' }, { max: 10, window: '1m' })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async () => (await call(app)).response))
  t.equal(upstream.requests.length - before, 10, 'exactly 10 reached the upstream')
  t.equal(responses.filter((response) => response.statusCode === 200).length, 10)
  const limited = responses.filter((response) => response.statusCode === 429)
  t.equal(limited.length, 40, 'the other 40 → 429')
  for (const response of limited) assertLimited(t, response, '429')
  t.equal(limited[0].headers['ratelimit-policy'], '"api";q=10;w=60')
  t.match(limited[0].headers.ratelimit, /^"api";r=0;t=\d+$/)
  const keys = await clients[0].keys(`${keyPrefix}*`)
  t.equal(keys.length, 1, 'one counter in Redis')
  t.equal(await clients[0].get(keys[0]), '50', 'every request was counted in Redis')
})

t.test('two gateway instances on one Redis: 50 parallel requests over both → exactly 10 in total', async (t) => {
  const { build } = await setup(t)
  const a = await build({ onStoreError: 'closed' }, { max: 10, window: '1m' })
  const b = await build({ onStoreError: 'closed' }, { max: 10, window: '1m' })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async (_, i) => (await call(i % 2 === 0 ? a : b)).response))
  t.equal(upstream.requests.length - before, 10, 'exactly 10 reached the upstream in total')
  t.same(responses.map((response) => response.statusCode).sort(), [...Array(10).fill(200), ...Array(40).fill(429)])
  for (const response of responses.filter((response) => response.statusCode === 429)) assertLimited(t, response, '429')
})

t.test('with ioredis auto-pipelining (recommended): counts stay exact, and a paused Redis still gets the policy in time', async (t) => {
  const { build, redis } = await setup(t)
  const app = await build({ onStoreError: 'closed', storeRetryInterval: RETRY_MS, perConsumer: { max: 10, window: '1m' } }, { max: 10, window: '1m' }, undefined, { enableAutoPipelining: true })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async () => (await call(app)).response))
  t.equal(upstream.requests.length - before, 10, 'exactly 10 reached the upstream, both limits counted per request')
  t.same(responses.map((response) => response.statusCode).sort(), [...Array(10).fill(200), ...Array(40).fill(429)])
  redis.pause()
  const { response, ms } = await call(app)
  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'GATEWAY_ERR_RATE_LIMIT_STORE')
  t.ok(ms < 150, `answered in ${ms} ms (< 150)`)
  redis.resume()
})

for (const policy of ['open', 'closed', 'local'] as const) {
  for (const failure of ['killed', 'paused'] as const) {
    t.test(`onStoreError "${policy}", Redis ${failure}: the policy applies within the store timeout`, async (t) => {
      const { build, redis } = await setup(t)
      const app = await build({ onStoreError: policy, storeRetryInterval: RETRY_MS, perConsumer: { max: 3, window: '1m' } })
      const warm = await call(app, 'gamma')
      t.equal(warm.response.statusCode, 200, 'before the failure')
      t.match(warm.response.headers.ratelimit, /^"consumer";r=2;t=\d+$/, 'counted in Redis before the failure')

      if (failure === 'killed') await redis.kill()
      else redis.pause()
      const results = []
      for (let i = 0; i < 3; i++) results.push(await call(app))
      await sleep(RETRY_MS + 50) // past storeRetryInterval: the next request tries the store again
      for (let i = 0; i < 2; i++) results.push(await call(app))

      const expected = policy === 'open' ? [200, 200, 200, 200, 200] : policy === 'closed' ? [503, 503, 503, 503, 503] : [200, 200, 200, 429, 429]
      t.same(results.map(({ response }) => response.statusCode), expected, 'the documented answers')
      results.forEach(({ response, ms }, i) => {
        const label = `request ${i + 1}`
        t.ok(ms < 150, `${label} answered in ${ms} ms (< 150)`)
        t.not(response.statusCode, 500, label)
        assertNoInternals(t, response, redis, label)
        if (policy === 'open') {
          t.equal(response.headers.ratelimit, undefined, `${label}: no RateLimit header`)
          t.equal(response.headers['ratelimit-policy'], undefined, `${label}: no RateLimit-Policy header`)
        } else if (policy === 'closed') {
          t.equal(response.json().code, 'GATEWAY_ERR_RATE_LIMIT_STORE', label)
          t.match(response.headers['retry-after'], /^[1-9]\d*$/, `${label}: Retry-After`)
        } else if (response.statusCode === 429) {
          assertLimited(t, response, label)
        } else {
          t.match(response.headers.ratelimit, new RegExp(`^"consumer";r=${2 - i};t=\\d+$`), `${label}: counted in memory`)
        }
      })
    })
  }
}

t.test('a client without commandTimeout: the plugin\'s own storeTimeout (100 ms) bounds a paused Redis', async (t) => {
  const { build, redis } = await setup(t)
  const app = await build({ onStoreError: 'closed', storeRetryInterval: RETRY_MS }, { max: 10, window: '1m' }, undefined, { commandTimeout: undefined })
  t.equal((await call(app)).response.statusCode, 200, 'before the pause')
  redis.pause()
  const first = await call(app)
  await sleep(RETRY_MS + 50) // the store is tried again, and times out again
  const retried = await call(app)
  for (const [label, { response, ms }] of [['first', first], ['retried', retried]] as const) {
    t.equal(response.statusCode, 503, label)
    t.equal(response.json().code, 'GATEWAY_ERR_RATE_LIMIT_STORE', label)
    t.ok(ms < 150, `${label} answered in ${ms} ms (< 150)`)
    assertNoInternals(t, response, redis, label)
  }
})

for (const failure of ['paused', 'killed'] as const) {
  t.test(`Redis ${failure}, then back: Redis-backed limiting resumes without restarting the gateway`, async (t) => {
    const { build, redis, clients } = await setup(t)
    const a = await build({ storeRetryInterval: RETRY_MS, perConsumer: { max: 5, window: '1m' } })
    const b = await build({ storeRetryInterval: RETRY_MS, perConsumer: { max: 5, window: '1m' } })
    if (failure === 'killed') await redis.kill()
    else redis.pause()
    // Both instances see the failure and fall back to memory (the default "local").
    t.equal((await call(a)).response.statusCode, 200)
    t.equal((await call(b)).response.statusCode, 200)

    if (failure === 'killed') await redis.restart()
    else redis.resume()
    for (const client of clients) await ready(client)
    await sleep(RETRY_MS + 50) // past storeRetryInterval
    // A consumer not used during the outage: its count can only be shared through Redis.
    for (let i = 0; i < 5; i++) {
      const { response } = await call(a, 'beta')
      t.equal(response.statusCode, 200, `request ${i + 1} through A`)
      t.match(response.headers.ratelimit, new RegExp(`^"consumer";r=${4 - i};t=\\d+$`), `request ${i + 1} through A: remaining ${4 - i}`)
    }
    const sixth = await call(b, 'beta')
    assertLimited(t, sixth.response, 'the 6th request, through B, sees A\'s 5 in Redis')
    t.ok(sixth.ms < 150, `answered in ${sixth.ms} ms`)
  })
}

t.test('per-consumer and per-service limits in Redis both apply; the tripped limit gives Retry-After', async (t) => {
  const { build } = await setup(t)
  const consumerFirst = await build({ perConsumer: { max: 3, window: '1m' }, onStoreError: 'closed' }, { max: 100, window: '10s' })
  for (let i = 0; i < 3; i++) t.equal((await call(consumerFirst)).response.statusCode, 200)
  const fourth = (await call(consumerFirst)).response
  assertLimited(t, fourth, '4th request')
  t.ok(Number(fourth.headers['retry-after']) > 10, `the consumer limit's (1 min) Retry-After: ${String(fourth.headers['retry-after'])}`)
  t.equal(fourth.headers['ratelimit-policy'], '"consumer";q=3;w=60, "api";q=100;w=10')
  t.match(fourth.headers.ratelimit, /^"consumer";r=0;t=\d+, "api";r=96;t=\d+$/)

  const serviceFirst = await build({ perConsumer: { max: 100, window: '1m' }, onStoreError: 'closed' }, { max: 2, window: '10s' })
  for (let i = 0; i < 2; i++) t.equal((await call(serviceFirst, 'beta')).response.statusCode, 200)
  const third = (await call(serviceFirst, 'beta')).response
  assertLimited(t, third, '3rd request')
  t.ok(Number(third.headers['retry-after']) <= 10, `the service limit's (10 s) Retry-After: ${String(third.headers['retry-after'])}`)
  t.equal(third.headers['ratelimit-policy'], '"consumer";q=100;w=60, "api";q=2;w=10')
})

t.test('store state changes are logged once: one warn when it fails, one info when it is back', async (t) => {
  const { build, redis, clients } = await setup(t)
  const logs: string[] = []
  const app = await build({ storeRetryInterval: RETRY_MS, perConsumer: { max: 100, window: '1m' } }, undefined, logs)
  const entries = (): Array<Record<string, unknown>> => logs.map((line) => JSON.parse(line) as Record<string, unknown>)
  // level 40 with the failure policy: the "unavailable" line; level 30 from the plugin: the "reachable again" line
  const warnings = (): Array<Record<string, unknown>> => entries().filter((entry) => entry.level === 40 && entry.onStoreError === 'local')
  const recoveries = (): Array<Record<string, unknown>> => entries().filter((entry) => entry.level === 30 && /rate-limit store/.test(String(entry.msg)))

  t.equal((await call(app)).response.statusCode, 200)
  await redis.kill()
  const statuses: number[] = []
  for (let i = 0; i < 10; i++) statuses.push((await call(app)).response.statusCode)
  await sleep(RETRY_MS + 50) // the store is tried (and fails) again
  for (let i = 0; i < 10; i++) statuses.push((await call(app)).response.statusCode)
  t.same(statuses, Array(20).fill(200), '20 requests, counted in memory')
  t.equal(warnings().length, 1, 'exactly one warn line for the outage')
  t.equal(recoveries().length, 0, 'nothing logged as recovered yet')
  t.notMatch(JSON.stringify(warnings()), /\n\s+at /, 'the warn line carries no stack')

  await redis.restart()
  await ready(clients[0])
  await sleep(RETRY_MS + 50)
  for (let i = 0; i < 5; i++) {
    const { response } = await call(app, 'beta')
    t.match(response.headers.ratelimit, new RegExp(`^"consumer";r=${99 - i};t=\\d+$`), `request ${i + 1} after recovery`)
  }
  t.equal(recoveries().length, 1, 'exactly one info line for the recovery')
  t.equal(warnings().length, 1, 'no new warning after the recovery')

  redis.pause() // a second outage is a new state change: logged again, once
  const during = await call(app, 'beta')
  t.equal(during.response.statusCode, 200, 'the second outage falls back to memory')
  t.equal(warnings().length, 2, 'one more warn line for the second outage')
})

t.test('a max() that throws, with the Redis store: 500 for that consumer, in the first batch and in the one after a store reply', async (t) => {
  const { build } = await setup(t)
  // alpha's personal max throws before any store call; beta's personal batch is counted in Redis,
  // then the shared service limit's max throws in the continuation that runs from Redis' reply.
  const throwsFor = (id: string) => (consumer: { id: string } | null): number => {
    if (consumer?.id === id) throw new Error('no plan')
    return 100
  }
  const app = await build({ onStoreError: 'closed', perConsumer: { max: throwsFor('alpha'), window: '1m' } }, { max: throwsFor('beta'), window: '1m', by: 'all' })
  const before = upstream.requests.length
  for (const who of ['alpha', 'beta'] as const) {
    const { response } = await call(app, who)
    t.equal(response.statusCode, 500, who)
    t.equal(response.json().code, 'GATEWAY_ERR_INTERNAL', who)
    t.notMatch(response.body, /no plan/, `${who}: the error's message is not sent`)
  }
  t.equal(upstream.requests.length, before, 'neither reached the upstream')
  t.equal((await call(app, 'gamma')).response.statusCode, 200, 'another consumer is served')
})

t.test('Redis paused and onStoreError "local": a max() that throws when the local fallback evaluates it again answers 500, and the gateway lives on', async (t) => {
  const { build, redis } = await setup(t)
  let evaluations = 0
  // Evaluated once for the store call, a second time by the local count after the store timed out.
  const flaky = (): number => {
    evaluations++
    if (evaluations === 2) throw new Error('plan service down')
    return 100
  }
  const app = await build({ onStoreError: 'local', storeRetryInterval: RETRY_MS, perConsumer: { max: flaky, window: '1m' } })
  redis.pause()
  const { response } = await call(app)
  t.equal(evaluations, 2, 'max() ran for the store call and again for the local count')
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'GATEWAY_ERR_INTERNAL')
  t.notMatch(response.body, /plan service down/, 'the error\'s message is not sent')
  t.equal((await call(app)).response.statusCode, 200, 'the next request is counted locally and served')
})
