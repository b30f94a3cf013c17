// Retries (SECURITY.md § H): idempotent requests only, bounded in number and by a budget, inside
// the breaker (one outcome per client request).
import t from 'tap'
import Fastify from 'fastify'
import { gateway } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { freePort } from '../../lib/testing/ports.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())
const app = Fastify()
await app.register(gateway, {
  auth: false,
  services: {
    api: { upstream: upstream.url, prefix: '/api', breaker: false },
    twice: { upstream: upstream.url, prefix: '/twice', retries: 2, breaker: false },
    down: { upstream: `http://127.0.0.1:${await freePort()}`, prefix: '/down', breaker: false }
  }
})
t.teardown(() => app.close())

t.test('a GET answered 503 is retried once and the retry\'s answer is sent', async (t) => {
  const before = upstream.requests.length
  upstream.failNext(1, { status: 503, body: 'busy' })
  const response = await app.inject({ url: '/api/x' })
  t.equal(response.statusCode, 200)
  t.equal(upstream.requests.length - before, 2)
})

t.test('a GET is retried at most N times; then the upstream\'s own answer is passed back', async (t) => {
  for (const [path, attempts] of [['/api/x', 1], ['/twice/x', 2]] as const) {
    const before = upstream.requests.length
    upstream.failNext(10, { status: 503, body: { busy: true } })
    const response = await app.inject({ url: path })
    t.equal(response.statusCode, 503, path)
    t.same(response.json(), { busy: true }, 'the upstream body, untouched')
    t.equal(upstream.requests.length - before, 1 + attempts, `${path}: 1 + ${attempts} calls`)
    upstream.failNext(0, 'reset')
  }
})

t.test('a POST is never retried: a reset POST reached the upstream exactly once', async (t) => {
  for (const behaviour of [{ status: 503 }, 'reset'] as const) {
    const before = upstream.requests.length
    upstream.failNext(1, behaviour)
    const response = await app.inject({ method: 'POST', url: '/api/orders', payload: { n: 1 } })
    t.equal(upstream.requests.length - before, 1, `${JSON.stringify(behaviour)}: one POST`)
    t.ok(response.statusCode >= 500)
  }
})

t.test('a GET reset after it was sent is not retried (the upstream may have acted)', async (t) => {
  const before = upstream.requests.length
  upstream.failNext(1, 'reset')
  t.equal((await app.inject({ url: '/api/x' })).statusCode, 502)
  t.equal(upstream.requests.length - before, 1)
})

t.test('the budget: a failing upstream gets at most about 20 % more requests', async (t) => {
  const budgeted = Fastify()
  await budgeted.register(gateway, { auth: false, services: { b: { upstream: upstream.url, prefix: '/b', breaker: false } } })
  t.teardown(() => budgeted.close())
  const before = upstream.requests.length
  upstream.failNext(1_000, { status: 503 })
  for (let i = 0; i < 100; i++) await budgeted.inject({ url: '/b/x' })
  const calls = upstream.requests.length - before
  upstream.failNext(0, 'reset')
  // 100 requests, 10 tokens to start with, 0.2 earned per request.
  t.ok(calls <= 100 + 10 + 20 + 1, `100 client requests → ${calls} upstream calls`)
  t.ok(calls > 100, 'some were retried')
})

t.test('connection refused is retried (nothing was sent), and still answered 502 when it persists', async (t) => {
  const response = await app.inject({ url: '/down/x' })
  t.equal(response.statusCode, 502)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
})

t.test('invalid retry options are refused at registration', async (t) => {
  for (const [retries, path] of [[9, 'services.a.retries'], [{ statuses: [404] }, 'services.a.retries.statuses'], [{ budget: 2 }, 'services.a.retries.budget']] as const) {
    const bad = Fastify()
    bad.register(gateway, { auth: false, services: { a: { upstream: 'http://127.0.0.1:1', prefix: '/a', retries: retries as never } } })
    await t.rejects(async () => { await bad.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: new RegExp(`"${path.replace(/\./g, '\\.')}"`) })
  }
})
