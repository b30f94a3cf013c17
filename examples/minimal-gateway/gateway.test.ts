// How a team tests its own gateway: real recording upstreams on loopback, the gateway called
// with app.inject, assertions on what each upstream received.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
// In your own project: import { createIdentityProvider, createTestUpstream, type TestUpstream } from 'fastify-gateway/testing'
import { createIdentityProvider, createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'
import { AUDIENCE, buildGateway, RATE_LIMITS, USERS_FALLBACK, type GatewayConfig } from './gateway.js'

const KEY = 'test-key-1'
const READ_ONLY_KEY = 'test-key-2'
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')
const APP_ORIGIN = 'https://app.example.com'

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
    // Port 0: tests running side by side never collide on the metrics port.
    metrics: { port: 0 },
    corsOrigins: [APP_ORIGIN],
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

t.test('JWT: a token from the identity provider is accepted; wrong audience or no signature → 401', async (t) => {
  const idp = await createIdentityProvider({ audience: AUDIENCE })
  t.teardown(async () => { await idp.close() })
  const { app, users } = await setup(t, { jwt: { issuer: idp.issuer } })
  const bearer = (token: string): InjectOptions['headers'] => ({ authorization: `Bearer ${token}` })

  const ok = await app.inject({ method: 'GET', url: '/api/v1/users/1', headers: bearer(idp.sign({ sub: 'alice', scope: 'orders:read' })) })
  t.equal(ok.statusCode, 200)
  t.equal(users.requests[0].headers['x-consumer-id'], 'alice')
  t.equal(users.requests[0].headers['x-consumer-scopes'], 'orders:read')
  t.equal(users.requests[0].headers.authorization, undefined, 'the upstream never sees the token')

  const [header, payload] = idp.sign({ sub: 'mallory' }).split('.')
  for (const token of [idp.sign({ sub: 'alice', aud: 'another-api' }), `${header}.${payload}.`]) {
    const refused = await app.inject({ method: 'GET', url: '/api/v1/users/1', headers: bearer(token) })
    t.equal(refused.statusCode, 401)
    t.equal(refused.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  }
  t.equal(users.requests.length, 1)
})

t.test('rate limits: the payments service has its own limit per consumer, on top of the global one', async (t) => {
  const { call, payments, users } = await setup(t)
  for (let i = 0; i < RATE_LIMITS.payments.max; i++) {
    t.equal((await call({ method: 'GET', url: '/api/v1/payments/p-1' })).statusCode, 200)
  }
  const limited = await call({ method: 'GET', url: '/api/v1/payments/p-1' })
  t.equal(limited.statusCode, 429)
  t.equal(limited.json().code, 'GATEWAY_ERR_RATE_LIMITED')
  t.ok(Number(limited.headers['retry-after']) > 0, 'Retry-After says when to come back')
  t.equal(payments.requests.length, RATE_LIMITS.payments.max, 'the refused request never reached the upstream')
  // The same consumer on another service is under the global limit only.
  t.equal((await call({ method: 'GET', url: '/api/v1/users/1' })).statusCode, 200)
  t.equal(users.requests.length, 1)
})

t.test('rate limits: every consumer has its own global budget; /health is never limited', async (t) => {
  const { app, call, users } = await setup(t)
  for (let i = 0; i < RATE_LIMITS.perConsumer.max; i++) {
    const res = await call({ method: 'GET', url: '/api/v1/users/1' })
    if (res.statusCode !== 200) return t.fail(`request ${i + 1} answered ${res.statusCode}`)
  }
  const limited = await call({ method: 'GET', url: '/api/v1/users/1' })
  t.equal(limited.statusCode, 429)
  t.equal(limited.json().code, 'GATEWAY_ERR_RATE_LIMITED')
  t.equal(users.requests.length, RATE_LIMITS.perConsumer.max)
  const other = await call({ method: 'GET', url: '/api/v1/users/1', headers: { 'x-api-key': READ_ONLY_KEY } })
  t.equal(other.statusCode, 200, 'another consumer is not affected')
  for (let i = 0; i <= RATE_LIMITS.perConsumer.max; i++) {
    const res = await app.inject({ method: 'GET', url: '/health' })
    if (res.statusCode !== 200) return t.fail(`health check ${i + 1} answered ${res.statusCode}`)
  }
})

t.test('users: the static fallback answers when the upstream fails, then while its breaker is open', async (t) => {
  const { app, call, users } = await setup(t)
  users.failNext(1, 'reset')
  const fallback = await call({ method: 'GET', url: '/api/v1/users/1' })
  t.equal(fallback.statusCode, 200)
  t.equal(fallback.headers['x-gateway-fallback'], '1')
  t.same(fallback.json(), USERS_FALLBACK)
  t.equal(users.requests.length, 1, 'the upstream was called once (a reset after sending is not retried)')

  // Ten calls in the window (the breaker's volumeThreshold), all failing: the breaker opens.
  users.failNext(9, 'reset')
  for (let i = 0; i < 9; i++) t.equal((await call({ method: 'GET', url: '/api/v1/users/1' })).statusCode, 200)
  await new Promise((resolve) => setImmediate(resolve)) // the outcome is counted once the response has ended
  t.equal(app.gateway.breaker('users')?.state, 'open')

  const seen = users.requests.length
  const open = await call({ method: 'GET', url: '/api/v1/users/2' })
  t.equal(open.statusCode, 200)
  t.equal(open.headers['x-gateway-fallback'], '1')
  t.same(open.json(), USERS_FALLBACK)
  t.equal(users.requests.length, seen, 'the open breaker did not call the upstream')
})

t.test('payments has no fallback: a failure is a 502 problem that names no upstream', async (t) => {
  const { call, payments } = await setup(t)
  payments.failNext(1, 'reset')
  const res = await call({ method: 'POST', url: '/api/v1/payments', payload: { orderId: 'o-1' } })
  t.equal(res.statusCode, 502)
  t.equal(res.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.notOk(res.body.includes(String(payments.port)), 'no upstream address in the body')
  t.equal(payments.requests.length, 1, 'never retried')
})

t.test('metrics are served on the internal listener only', async (t) => {
  const { app, call } = await setup(t)
  t.equal((await call({ method: 'GET', url: '/api/v1/users/1' })).statusCode, 200)
  t.equal((await call({ method: 'GET', url: '/metrics' })).statusCode, 404, 'the public port has no /metrics, even with a credential')

  const address = app.gatewayMetrics.address()
  if (address === null) return t.fail('no metrics listener after ready')
  t.equal(address.address, '127.0.0.1')
  const scrape = await fetch(`http://127.0.0.1:${address.port}/metrics`, { signal: AbortSignal.timeout(5_000) })
  t.equal(scrape.status, 200)
  const text = await scrape.text()
  t.match(text, /gateway_requests_total\{[^}]*service="users"[^}]*status_class="2xx"[^}]*\} 1\b/, 'the proxied request is counted, by service')
  t.match(text, /gateway_requests_total\{[^}]*route="unmatched"[^}]*status_class="4xx"[^}]*\} 1\b/, 'and the 404 of /metrics on the public port, by route pattern (never the raw URL)')
  t.notOk(text.includes(KEY), 'no credential in any label')
})

t.test('CORS: a preflight from the app origin is answered before auth; other origins get no CORS header', async (t) => {
  const { app, call, all } = await setup(t)
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/api/v1/orders/1',
    headers: { origin: APP_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'x-api-key' }
  })
  t.equal(preflight.statusCode, 204, 'no credential needed for a preflight')
  t.equal(preflight.headers['access-control-allow-origin'], APP_ORIGIN)
  t.match(String(preflight.headers['access-control-allow-headers']), /x-api-key/)

  const foreign = await app.inject({
    method: 'OPTIONS',
    url: '/api/v1/orders/1',
    headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' }
  })
  t.equal(foreign.headers['access-control-allow-origin'], undefined)

  const actual = await call({ method: 'GET', url: '/api/v1/orders/1', headers: { origin: APP_ORIGIN } })
  t.equal(actual.statusCode, 200)
  t.equal(actual.headers['access-control-allow-origin'], APP_ORIGIN)
  t.match(String(actual.headers['access-control-expose-headers']), /x-request-id/)
  t.equal(all.reduce((sum, upstream) => sum + upstream.requests.length, 0), 1, 'preflights never reach an upstream')
})
