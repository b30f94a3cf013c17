// Regressions from the 2026-11-22 review: each case failed before its fix.
import t from 'tap'
import { createHash } from 'node:crypto'
import { connect } from 'node:net'
import { once } from 'node:events'
import Fastify from 'fastify'
import fp from 'fastify-plugin'
import { auth, correlationId, gateway, gatewayServerOptions, proxy, requestGuard } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { listen } from '../helpers/gateway.js'
import { rawRequest } from '../helpers/raw-http.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())
const jwt = { secret: SECRET, audience: 'api' }
const bearer = (claims: Record<string, unknown> = {}) => ({ authorization: `Bearer ${hs256(claims)}` })

t.test('a rate limit holds when the host has an async onSend hook', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(fp(async (instance) => { instance.addHook('onSend', async (_request, _reply, payload) => payload) }))
  await app.register(gateway, { auth: { jwt }, services: { s: { upstream: upstream.url, prefix: '/s', rateLimit: { max: 1, window: '1m' } } } })
  t.teardown(() => app.close())
  const before = upstream.requests.length
  const statuses = []
  for (let i = 0; i < 4; i++) statuses.push((await app.inject({ method: 'POST', url: '/s/x', payload: 'x', headers: bearer() })).statusCode)
  t.same(statuses, [200, 429, 429, 429])
  t.equal(upstream.requests.length - before, 1, 'only the admitted request reached the upstream')
})

t.test('Expect: 100-continue is answered by the gateway, forwarded without it, and never opens the breaker', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: false, services: { s: { upstream: upstream.url, prefix: '/s', breaker: { volumeThreshold: 2 } } } })
  t.teardown(() => app.close())
  const port = await listen(app)
  for (let i = 0; i < 5; i++) {
    const response = await rawRequest(port, 'POST /s/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello')
    t.match(response.body, /"ok":true/, `request ${i} proxied`)
  }
  t.equal(upstream.requests.at(-1)?.headers.expect, undefined)
  t.equal(app.gateway.breaker('s')?.state, 'closed')
})

t.test('public routes never forward the client\'s unverified credential', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: { jwt, apiKeys: { keys: { ['0'.repeat(64)]: { id: 'x' } } } }, services: { open: { upstream: upstream.url, prefix: '/open', public: true } } })
  t.teardown(() => app.close())
  await app.inject({ url: '/open/x', headers: { authorization: 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.', 'x-api-key': 'secret-key' } })
  t.equal(upstream.requests.at(-1)?.headers.authorization, undefined)
  t.equal(upstream.requests.at(-1)?.headers['x-api-key'], undefined)
})

t.test('composed by hand, custom identity headers are stripped in every spelling, public routes included', async (t) => {
  const app = Fastify()
  app.register(correlationId).register(requestGuard).register(auth, { jwt, identityHeaders: { id: 'x-user' } })
    .register(proxy, { services: { open: { upstream: upstream.url, prefix: '/open', public: true }, api: { upstream: upstream.url, prefix: '/api' } } })
  t.teardown(() => app.close())
  await app.inject({ url: '/open/x', headers: { 'x-user': 'admin', x_user: 'admin2' } })
  t.equal(upstream.requests.at(-1)?.headers['x-user'], undefined)
  t.equal(upstream.requests.at(-1)?.headers.x_user, undefined)
  await app.inject({ url: '/api/x', headers: { ...bearer({ sub: 'alice' }), x_user: 'admin' } })
  t.equal(upstream.requests.at(-1)?.headers['x-user'], 'alice')
  t.equal(upstream.requests.at(-1)?.headers.x_user, undefined)
})

t.test('a client that stops reading is cut off by the idle timeout; the upstream is released', async (t) => {
  const app = Fastify({ ...gatewayServerOptions({ idleTimeout: 500 }) })
  await app.register(gateway, { auth: false, services: { big: { upstream: upstream.url, prefix: '/big' } } })
  t.teardown(() => app.close())
  const port = await listen(app)
  upstream.failNext(1, { status: 200, body: Buffer.alloc(32 * 1024 * 1024, 'z') })
  // A paused client never reads the close: watch the gateway's side of the connection.
  const serverSide = once(app.server, 'connection').then(async ([serverSocket]) => await once(serverSocket, 'close'))
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  socket.write('GET /big/x HTTP/1.1\r\nHost: gw\r\n\r\n')
  socket.pause() // never reads
  const started = Date.now()
  const guard = setTimeout(() => socket.destroy(), 8_000)
  await serverSide
  clearTimeout(guard)
  t.ok(Date.now() - started < 5_000, `closed after ${Date.now() - started} ms`)
})

t.test('a half-open probe that never reaches the upstream does not close the breaker', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: 'http://127.0.0.1:1', prefix: '/s', breaker: { volumeThreshold: 1, resetTimeout: 100 } } } })
  t.teardown(() => app.close())
  for (let i = 0; i < 2; i++) await app.inject({ url: '/s/x' })
  t.equal(app.gateway.breaker('s')?.state, 'open')
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.equal((await app.inject({ url: '/s/a%2Fb' })).statusCode, 400, 'refused by the guard, before the breaker')
  t.equal(app.gateway.breaker('s')?.state, 'half-open', 'still waiting for a real probe')
})

t.test('without gatewayServerOptions, upstream failures are still logged without addresses', async (t) => {
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'debug', stream: { write: (line: string) => { logs.push(line) } } } })
  await app.register(gateway, { auth: false, services: { down: { upstream: 'http://127.0.0.1:1', prefix: '/down' } } })
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: '/down/x' })).statusCode, 502)
  t.notMatch(logs.join(''), /127\.0\.0\.1:1\b|"stack"/)
})

t.test('an upstream cannot replace the gateway\'s request id or rate-limit headers', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: { jwt }, rateLimit: { perConsumer: { max: 5, window: '1m' } }, services: { s: { upstream: upstream.url, prefix: '/s' } } })
  t.teardown(() => app.close())
  upstream.failNext(1, { status: 200, headers: { 'x-request-id': 'upstream-id', ratelimit: '"x";r=999;t=1' }, body: 'ok' })
  const response = await app.inject({ url: '/s/x', headers: { ...bearer(), 'x-request-id': 'client-id' } })
  t.equal(response.headers['x-request-id'], 'client-id')
  t.match(response.headers.ratelimit, /^"consumer";r=4/)
})

t.test('a host preHandler error keeps its status on proxied routes', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: upstream.url, prefix: '/s' } } })
  app.addHook('preHandler', async () => { throw Object.assign(new Error('nope'), { statusCode: 403 }) })
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: '/s/x' })).statusCode, 403)
})

t.test('optional auth: a malformed Authorization is a failed credential, not anonymous', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: { jwt } })
  app.get('/maybe', { config: { gateway: { auth: 'optional' } } }, async (request) => request.consumer?.kind)
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: '/maybe', headers: { authorization: 'Bearer bad token!' } })).statusCode, 401)
  t.equal((await app.inject({ url: '/maybe' })).body, 'anonymous')
})

t.test('query API keys: values with "=" survive, and the parameter is always removed', async (t) => {
  const key = 'abc=='
  const app = Fastify()
  await app.register(gateway, { auth: { jwt, apiKeys: { query: 'api_key', keys: { [createHash('sha256').update(key).digest('hex')]: { id: 'q' } } } }, services: { s: { upstream: upstream.url, prefix: '/s' } } })
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: `/s/x?api_key=${key}` })).statusCode, 200)
  await app.inject({ url: '/s/x?a=1&api_key=other', headers: bearer() })
  t.equal(upstream.requests.at(-1)?.url, '/x?a=1')
})

t.test('API-key lookups are coalesced per key', async (t) => {
  let calls = 0
  const app = Fastify()
  await app.register(gateway, { auth: { apiKeys: { lookup: async () => { calls++; await new Promise((resolve) => setTimeout(resolve, 50)); return { id: 'db' } } } } })
  app.get('/x', async () => 'ok')
  t.teardown(() => app.close())
  const statuses = await Promise.all(Array.from({ length: 10 }, async () => (await app.inject({ url: '/x', headers: { 'x-api-key': 'same' } })).statusCode))
  t.same(statuses, Array(10).fill(200))
  t.equal(calls, 1)
})

t.test('misconfigurations refused at registration: reserved identity headers, JWKS issuer without audience', async (t) => {
  for (const [options, path] of [
    [{ auth: { jwt, identityHeaders: { id: 'content-length' } } }, 'auth.identityHeaders.id'],
    [{ auth: false, identityHeaders: ['authorization'] }, 'identityHeaders[0]'],
    [{ auth: { jwt: { issuers: [{ issuer: 'https://id.example.com' }] } } }, 'auth.jwt.issuers[0].audience']
  ] as const) {
    const app = Fastify()
    app.register(gateway, options as never)
    await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: new RegExp(`"${path.replace(/[.[\]]/g, '\\$&')}"`) })
  }
})

t.test('a declared breaker is never silently ignored; fastify.gateway always exists with the umbrella', async (t) => {
  const app = Fastify()
  app.register(correlationId).register(requestGuard).register(proxy, { services: { s: { upstream: upstream.url, prefix: '/s', breaker: { volumeThreshold: 5 } } } })
  await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: /services\.s\.breaker/ })
  const bare = Fastify()
  await bare.register(gateway, { auth: false })
  t.equal(bare.gateway.breaker('none'), undefined)
  await bare.close()
})

t.test('the query API key is removed on public routes too', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: { apiKeys: { query: 'api_key', keys: { ['0'.repeat(64)]: { id: 'q' } } } }, services: { open: { upstream: upstream.url, prefix: '/open', public: true } } })
  t.teardown(() => app.close())
  await app.inject({ url: '/open/x?a=1&api_key=secret' })
  t.equal(upstream.requests.at(-1)?.url, '/x?a=1')
})
