// The dashboard endpoint against real recording upstreams on loopback: both up, one down (refused,
// 5xx or hanging past the per-call timeout), both down, and the breaker of a failing service.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
// In your own project: import { createTestUpstream, type TestUpstream } from 'fastify-gateway/testing'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'
import { buildBff, type BffConfig } from './gateway.js'

const KEY = 'dashboard-key'
const CALL_TIMEOUT_MS = 300
const USER = { id: 'alice', name: 'Alice' }
const ORDERS = [{ id: 'o-1', total: 42 }]

interface Setup {
  app: FastifyInstance
  users: TestUpstream
  orders: TestUpstream
  dashboard: () => Promise<LightMyRequestResponse>
}

/** Recording upstreams for both services; `replace` points a service elsewhere (e.g. at a closed port). */
async function setup (t: Test, replace: Partial<BffConfig['upstreams']> = {}): Promise<Setup> {
  const [users, orders] = await Promise.all([createTestUpstream(), createTestUpstream()])
  users.respond(() => ({ body: USER }))
  orders.respond(() => ({ body: ORDERS }))
  const app = await buildBff({
    upstreams: { users: replace.users ?? users.url, orders: replace.orders ?? orders.url },
    apiKeys: { [createHash('sha256').update(KEY).digest('hex')]: { id: 'alice', scopes: ['dashboard'] } },
    callTimeoutMs: CALL_TIMEOUT_MS
  })
  t.teardown(async () => {
    await app.close()
    await Promise.all([users.close(), orders.close()])
  })
  return { app, users, orders, dashboard: async () => await app.inject({ method: 'GET', url: '/api/v1/dashboard', headers: { 'x-api-key': KEY } }) }
}

/** A URL nothing listens on: an upstream started and closed again. */
async function refusedUrl (): Promise<string> {
  const gone = await createTestUpstream()
  await gone.close()
  return gone.url
}

function assertNoAddress (t: Test, res: LightMyRequestResponse, ...upstreams: string[]): void {
  t.notOk(res.body.includes('127.0.0.1'), 'no upstream address in the body')
  for (const url of upstreams) t.notOk(res.body.includes(new URL(url).port), 'no upstream port in the body')
}

t.test('both up: 200 with both parts, partial false; each service got the verified identity', async (t) => {
  const { dashboard, users, orders } = await setup(t)
  const res = await dashboard()
  t.equal(res.statusCode, 200)
  t.same(res.json(), { user: USER, orders: ORDERS, partial: false, failed: [] })
  t.equal(users.requests.length, 1)
  t.equal(orders.requests.length, 1)
  t.equal(users.requests[0].url, '/alice')
  t.equal(orders.requests[0].url, '/?userId=alice')
  for (const upstream of [users, orders]) {
    const headers = upstream.requests[0].headers
    t.equal(headers['x-request-id'], res.headers['x-request-id'], 'the reply\'s request id')
    t.equal(headers['x-consumer-id'], 'alice')
    t.equal(headers['x-api-key'], undefined, 'never the client\'s credential')
  }
})

t.test('the two calls run in parallel: orders is called before users has answered', async (t) => {
  const { dashboard, users, orders } = await setup(t)
  const DELAY_MS = 150
  const arrived: Record<string, number> = {}
  users.respond(() => { arrived.users = Date.now(); return { body: USER, delay: DELAY_MS } })
  orders.respond(() => { arrived.orders = Date.now(); return { body: ORDERS, delay: DELAY_MS } })
  const res = await dashboard()
  t.equal(res.statusCode, 200)
  t.equal(res.json().partial, false)
  // One after the other, the second call would arrive at least DELAY_MS after the first.
  const gap = Math.abs(arrived.users - arrived.orders)
  t.ok(gap < DELAY_MS, `calls arrived ${gap} ms apart`)
})

t.test('orders refused: 200 with the user, orders null, partial true, orders named', async (t) => {
  const { dashboard, users } = await setup(t, { orders: await refusedUrl() })
  const res = await dashboard()
  t.equal(res.statusCode, 200)
  t.same(res.json(), { user: USER, orders: null, partial: true, failed: [{ part: 'orders', reason: 'unavailable' }] })
  t.equal(res.headers['cache-control'], 'no-store', 'a partial answer is not cached')
  t.equal(users.requests.length, 1)
  assertNoAddress(t, res)
})

t.test('orders hanging past the per-call timeout: the user part comes back within the timeout', async (t) => {
  const { dashboard, orders } = await setup(t)
  orders.respond(() => 'hang')
  const started = Date.now()
  const res = await dashboard()
  const elapsed = Date.now() - started
  t.equal(res.statusCode, 200)
  t.same(res.json(), { user: USER, orders: null, partial: true, failed: [{ part: 'orders', reason: 'timeout' }] })
  t.ok(elapsed >= CALL_TIMEOUT_MS - 20 && elapsed < CALL_TIMEOUT_MS + 1_000, `answered after ${elapsed} ms`)
  t.equal(orders.requests.length, 1, 'the call was made')
  assertNoAddress(t, res, orders.url)
})

t.test('users answering 503: partial, user named; a 4xx is a missing part but not a breaker failure', async (t) => {
  const { app, dashboard, users } = await setup(t)
  users.failNext(1, { status: 503, body: { error: 'internal detail at 10.1.2.3' } })
  const down = await dashboard()
  t.equal(down.statusCode, 200)
  t.same(down.json(), { user: null, orders: ORDERS, partial: true, failed: [{ part: 'user', reason: 'unavailable' }] })
  t.notOk(down.body.includes('10.1.2.3'), 'the upstream\'s error body is not passed on')

  users.respond(() => ({ status: 404, body: { error: 'no such user' } }))
  for (let i = 0; i < 12; i++) {
    const missing = await dashboard()
    t.same(missing.json().failed, [{ part: 'user', reason: 'rejected' }])
  }
  t.equal(app.gateway.breaker('users')?.state, 'closed', '404s do not open the breaker')
})

t.test('both down: 502 problem, no address', async (t) => {
  const { dashboard } = await setup(t, { users: await refusedUrl(), orders: await refusedUrl() })
  const res = await dashboard()
  t.equal(res.statusCode, 502)
  t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(res.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.equal(res.json().requestId, res.headers['x-request-id'])
  assertNoAddress(t, res)
})

t.test('both hanging: 502 within the timeout', async (t) => {
  const { dashboard, users, orders } = await setup(t)
  users.respond(() => 'hang')
  orders.respond(() => 'hang')
  const started = Date.now()
  const res = await dashboard()
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.ok(Date.now() - started < CALL_TIMEOUT_MS + 1_000, 'the two timeouts ran side by side')
})

t.test('a failing orders service opens its breaker: the BFF stops calling it, and so does the proxy', async (t) => {
  const { app, dashboard, users, orders } = await setup(t)
  orders.respond(() => ({ status: 500 }))
  // The breaker's volumeThreshold is 10: ten failed calls in the window open it.
  for (let i = 0; i < 10; i++) {
    const res = await dashboard()
    t.same(res.json().failed, [{ part: 'orders', reason: 'unavailable' }])
  }
  t.equal(orders.requests.length, 10)
  t.equal(app.gateway.breaker('orders')?.state, 'open')
  t.equal(app.gateway.breaker('users')?.state, 'closed', 'one service\'s failures never open another\'s breaker')

  for (let i = 0; i < 5; i++) {
    const res = await dashboard()
    t.equal(res.statusCode, 200)
    t.same(res.json(), { user: USER, orders: null, partial: true, failed: [{ part: 'orders', reason: 'circuit_open' }] })
  }
  t.equal(orders.requests.length, 10, 'no call reached orders while its breaker was open')
  t.equal(users.requests.length, 15, 'users kept being called')

  // The proxied route shares the breaker: it fails fast too.
  const proxied = await app.inject({ method: 'GET', url: '/api/v1/orders/o-1', headers: { 'x-api-key': KEY } })
  t.equal(proxied.statusCode, 503)
  t.equal(proxied.json().code, 'GATEWAY_ERR_CIRCUIT_OPEN')
  t.ok(Number(proxied.headers['retry-after']) > 0)
  t.equal(orders.requests.length, 10)
})

t.test('no credential: 401 and no service is called', async (t) => {
  const { app, users, orders } = await setup(t)
  const res = await app.inject({ method: 'GET', url: '/api/v1/dashboard' })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  t.equal(users.requests.length + orders.requests.length, 0)
})
