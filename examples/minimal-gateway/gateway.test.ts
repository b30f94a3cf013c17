// How a team tests its own gateway: real recording upstreams on loopback, the gateway called
// with app.inject, assertions on what each upstream received.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
// In your own project: import { createTestUpstream, type TestUpstream } from 'fastify-gateway/testing'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'
import { buildGateway, type GatewayConfig } from './gateway.js'

const KEY = 'test-key-1'
const READ_ONLY_KEY = 'test-key-2'
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')

interface Setup {
  app: FastifyInstance
  /** app.inject with the test consumer's API key. */
  call: (options: InjectOptions) => Promise<LightMyRequestResponse>
  users: TestUpstream
  orders: [TestUpstream, TestUpstream]
  payments: TestUpstream
  all: TestUpstream[]
}

async function setup (t: Test, config: Partial<GatewayConfig> = {}): Promise<Setup> {
  const [users, orders1, orders2, payments] = await Promise.all([
    createTestUpstream(), createTestUpstream(), createTestUpstream(), createTestUpstream()
  ])
  const all = [users, orders1, orders2, payments]
  t.teardown(async () => { await Promise.all(all.map(async (upstream) => { await upstream.close() })) })
  const app = await buildGateway({
    upstreams: { users: users.url, orders: [orders1.url, orders2.url], payments: payments.url },
    apiKeys: { [digest(KEY)]: { id: 'client-1', scopes: ['payments'] }, [digest(READ_ONLY_KEY)]: { id: 'client-2' } },
    ...config
  })
  t.teardown(async () => { await app.close() })
  const call = async (options: InjectOptions): Promise<LightMyRequestResponse> =>
    await app.inject({ ...options, headers: { 'x-api-key': KEY, ...options.headers } })
  return { app, call, users, orders: [orders1, orders2], payments, all }
}

t.test('each service prefix reaches its own upstream, prefix stripped and query kept', async (t) => {
  const { call, users, orders, payments } = await setup(t)
  const cases: Array<[string, TestUpstream, string]> = [
    ['/api/v1/users/42?expand=orders', users, '/42?expand=orders'],
    ['/api/v1/users', users, '/'],
    ['/api/v1/orders/7?status=open&page=2', orders[0], '/7?status=open&page=2'],
    ['/api/v1/payments/p-1', payments, '/p-1']
  ]
  for (const [url, upstream, upstreamUrl] of cases) {
    const before = upstream.requests.length
    const res = await call({ method: 'GET', url })
    t.equal(res.statusCode, 200, url)
    t.equal(upstream.requests.length, before + 1, `${url} reached its upstream once`)
    const received = upstream.requests[before]
    t.equal(received.method, 'GET', url)
    t.equal(received.url, upstreamUrl, url)
    t.equal(received.headers['x-request-id'], res.headers['x-request-id'], `${url}: upstream got the reply's request id`)
    t.equal(received.headers['x-forwarded-for'], '127.0.0.1', `${url}: upstream got the client address`)
  }
})

t.test('a POST body is forwarded to the payments upstream', async (t) => {
  const { call, payments } = await setup(t)
  const res = await call({ method: 'POST', url: '/api/v1/payments', payload: { orderId: 'o-1', amount: 42 } })
  t.equal(res.statusCode, 200)
  t.equal(payments.requests.length, 1)
  t.equal(payments.requests[0].method, 'POST')
  t.equal(payments.requests[0].url, '/')
  t.equal(payments.requests[0].headers['content-type'], 'application/json')
  t.same(JSON.parse(payments.requests[0].body.toString()), { orderId: 'o-1', amount: 42 })
})

t.test('orders alternates between its two upstreams', async (t) => {
  const { call, orders } = await setup(t)
  for (let i = 1; i <= 4; i++) {
    const res = await call({ method: 'GET', url: `/api/v1/orders/${i}` })
    t.equal(res.statusCode, 200)
  }
  t.same(orders[0].requests.map((request) => request.url), ['/1', '/3'])
  t.same(orders[1].requests.map((request) => request.url), ['/2', '/4'])
})

t.test('a single orders upstream URL works too', async (t) => {
  const single = await createTestUpstream()
  t.teardown(async () => { await single.close() })
  const { call, orders } = await setup(t, { upstreams: { users: single.url, orders: single.url, payments: single.url } })
  const res = await call({ method: 'GET', url: '/api/v1/orders/1' })
  t.equal(res.statusCode, 200)
  t.equal(single.requests.length, 1)
  t.equal(single.requests[0].url, '/1')
  t.equal(orders[0].requests.length + orders[1].requests.length, 0)
})

t.test('a valid client request id is kept end to end', async (t) => {
  const { call, users } = await setup(t)
  const res = await call({ method: 'GET', url: '/api/v1/users/1', headers: { 'x-request-id': 'trace-abc-123' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-request-id'], 'trace-abc-123')
  t.equal(users.requests[0].headers['x-request-id'], 'trace-abc-123')
})

t.test('/health is answered by the gateway itself', async (t) => {
  const { call, all } = await setup(t)
  const res = await call({ method: 'GET', url: '/health' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { ok: true })
  t.equal(all.reduce((sum, upstream) => sum + upstream.requests.length, 0), 0)
})

t.test('unknown paths are 404 and reach no upstream', async (t) => {
  const { call, all } = await setup(t)
  for (const url of ['/', '/nope', '/api/v2/users/1', '/api/v1/usersx', '/api/v1', '/api/v1/refunds/1']) {
    const res = await call({ method: 'GET', url })
    t.equal(res.statusCode, 404, url)
  }
  t.equal(all.reduce((sum, upstream) => sum + upstream.requests.length, 0), 0)
})

t.test('client-sent identity and forwarding headers never reach the upstream', async (t) => {
  const { call, users } = await setup(t)
  const res = await call({
    method: 'GET',
    url: '/api/v1/users/1',
    headers: {
      'x-consumer-id': 'admin',
      'x-consumer-scopes': 'payments:write',
      'x-forwarded-for': '203.0.113.9',
      'x-forwarded-host': 'evil.example'
    }
  })
  t.equal(res.statusCode, 200)
  const received = users.requests[0].headers
  // The upstream sees the verified identity, never the forged one.
  t.equal(received['x-consumer-id'], 'client-1')
  t.equal(received['x-consumer-scopes'], 'payments')
  // Without trustProxy the client's own X-Forwarded-For is replaced, not appended to.
  t.equal(received['x-forwarded-for'], '127.0.0.1')
  t.not(received['x-forwarded-host'], 'evil.example')
})

t.test('with trustProxy, the client address comes from the trusted proxy', async (t) => {
  const { call, users } = await setup(t, { trustProxy: ['127.0.0.1'] })
  const res = await call({ method: 'GET', url: '/api/v1/users/1', headers: { 'x-forwarded-for': '203.0.113.9' } })
  t.equal(res.statusCode, 200)
  t.equal(users.requests[0].headers['x-forwarded-for'], '203.0.113.9')
})

t.test('auth: no credential → 401; a key without the payments scope → 403; the upstream never sees the key', async (t) => {
  const { app, call, users, payments } = await setup(t)
  const anonymous = await app.inject({ method: 'GET', url: '/api/v1/users/1' })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  t.equal(users.requests.length, 0)
  const readOnly = await call({ method: 'POST', url: '/api/v1/payments', headers: { 'x-api-key': READ_ONLY_KEY }, payload: {} })
  t.equal(readOnly.statusCode, 403)
  t.equal(payments.requests.length, 0)
  t.equal((await call({ method: 'GET', url: '/api/v1/users/1' })).statusCode, 200)
  t.equal(users.requests[0].headers['x-consumer-id'], 'client-1')
  t.equal(users.requests[0].headers['x-api-key'], undefined)
  t.same((await call({ method: 'GET', url: '/api/v1/me' })).json(), { id: 'client-1', scopes: ['payments'] })
})
