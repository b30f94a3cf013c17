// Secure by default: every route needs a credential unless it is public — whenever and wherever
// the route was registered. Tokens here are HS256 (shared secret); JWKS has its own suites.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { gateway, gatewayServerOptions, type AuthOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

async function build (auth: AuthOptions, logs: string[] = []): Promise<FastifyInstance> {
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } }, ...gatewayServerOptions() })
  // Registered before the gateway, and by another plugin: must be protected all the same.
  app.get('/early', async () => 'early')
  await app.register(fp(async (instance) => { instance.get('/metrics', async () => 'metrics 1') }))
  await app.register(gateway, {
    auth,
    services: {
      users: { upstream: upstream.url, prefix: '/users' },
      reports: { upstream: upstream.url, prefix: '/reports', scopes: ['reports:read'] },
      catalog: { upstream: upstream.url, prefix: '/catalog', public: true }
    }
  })
  app.get('/health', async () => ({ ok: true }))
  app.get('/open', { config: { gateway: { public: true } } }, async () => 'open')
  app.get('/docs/:page', async () => 'docs')
  app.get('/docsx', async () => 'docsx')
  app.get('/me', { config: { gateway: { scopes: ['profile:read'] } } }, async (request) => request.consumer)
  app.get('/maybe', { config: { gateway: { auth: 'optional' } } }, async (request) => request.consumer)
  await app.register(async (child) => { child.get('/child', async () => 'child') })
  await app.ready()
  return app
}

const baseAuth: AuthOptions = { jwt: { secret: SECRET, audience: 'api' }, public: ['GET /health', '/docs/*'] }
const app = await build(baseAuth)
t.teardown(() => app.close())
const bearer = (claims?: Record<string, unknown>) => ({ authorization: `Bearer ${hs256(claims)}` })

t.test('protected routes without a credential → 401 problem with WWW-Authenticate, upstream not hit', async (t) => {
  const before = upstream.requests.length
  for (const url of ['/users/1', '/reports/1', '/early', '/metrics', '/child', '/docsx', '/me']) {
    const response = await app.inject({ url })
    t.equal(response.statusCode, 401, url)
    t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED', url)
    t.equal(response.headers['www-authenticate'], 'Bearer realm="api"', url)
  }
  t.equal(upstream.requests.length, before, 'nothing was forwarded')
})

t.test('public routes answer without a credential: allowlist, route flag, service flag', async (t) => {
  t.equal((await app.inject({ url: '/health' })).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: '/health' })).statusCode, 200, 'a public GET is a public HEAD')
  t.equal((await app.inject({ url: '/open' })).body, 'open')
  t.equal((await app.inject({ url: '/docs/intro' })).body, 'docs', '/docs/* covers /docs/:page')
  const catalog = await app.inject({ url: '/catalog/items' })
  t.equal(catalog.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-consumer-id'], undefined, 'no identity on public routes')
})

t.test('unknown paths stay 404', async (t) => {
  t.equal((await app.inject({ url: '/nowhere' })).statusCode, 404)
  t.equal((await app.inject({ url: '/docs' })).statusCode, 404)
})

t.test('a valid token reaches the upstream as the verified identity, without the credential', async (t) => {
  const response = await app.inject({ url: '/users/1', headers: { ...bearer({ sub: 'alice', scope: 'a b' }), 'x-consumer-id': 'mallory', 'X-Consumer-Scopes': 'admin' } })
  t.equal(response.statusCode, 200)
  const received = upstream.requests.at(-1)
  t.equal(received?.headers['x-consumer-id'], 'alice')
  t.equal(received?.headers['x-consumer-scopes'], 'a b')
  t.equal(received?.headers.authorization, undefined)
  t.equal(received?.rawHeaders.filter((name) => name.toLowerCase() === 'x-consumer-id').length, 1, 'exactly one x-consumer-id')
})

t.test('request.consumer is typed and set on the team\'s own routes', async (t) => {
  const response = await app.inject({ url: '/me', headers: bearer({ sub: 'bob', scope: 'profile:read' }) })
  t.equal(response.statusCode, 200)
  t.match(response.json(), { id: 'bob', kind: 'jwt', scopes: ['profile:read'], claims: { sub: 'bob', aud: 'api' } })
})

t.test('a missing scope → 403 with insufficient_scope; route and service scopes both apply', async (t) => {
  const before = upstream.requests.length
  const me = await app.inject({ url: '/me', headers: bearer({ scope: 'other' }) })
  t.equal(me.statusCode, 403)
  t.equal(me.json().code, 'GATEWAY_ERR_FORBIDDEN')
  t.match(me.headers['www-authenticate'], 'error="insufficient_scope"')
  t.equal((await app.inject({ url: '/reports/1', headers: bearer({ scp: ['x'] }) })).statusCode, 403)
  t.equal(upstream.requests.length, before, 'nothing was forwarded')
  t.equal((await app.inject({ url: '/reports/1', headers: bearer({ scp: ['reports:read'] }) })).statusCode, 200, 'scp as an array works')
})

t.test('optional auth: anonymous without a credential, 401 with a bad one', async (t) => {
  t.match((await app.inject({ url: '/maybe' })).json(), { id: 'anonymous', kind: 'anonymous', scopes: [] })
  t.match((await app.inject({ url: '/maybe', headers: bearer({ sub: 'carol' }) })).json(), { id: 'carol', kind: 'jwt' })
  t.equal((await app.inject({ url: '/maybe', headers: { authorization: 'Bearer not.a.token' } })).statusCode, 401)
})

t.test('an invalid token → 401 with error="invalid_token"', async (t) => {
  const response = await app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256({}, 'another-secret-that-is-also-32-bytes-long!')}` } })
  t.equal(response.statusCode, 401)
  t.equal(response.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
})

t.test('the public routes are logged once at boot', async (t) => {
  const logs: string[] = []
  const other = await build(baseAuth, logs)
  await other.close()
  const lines = logs.map((line) => JSON.parse(line)).filter((entry) => Array.isArray(entry.publicRoutes))
  t.equal(lines.length, 1)
  t.ok(lines[0].publicRoutes.includes('GET /health'))
  t.ok(lines[0].publicRoutes.includes('GET /catalog/*'))
  t.notOk(lines[0].publicRoutes.includes('GET /docsx'))
})

t.test('claims mapped to headers, and forwardCredentials', async (t) => {
  const other = await build({ ...baseAuth, identityHeaders: { claims: { tenant: 'x-tenant' } }, forwardCredentials: true })
  t.teardown(() => other.close())
  const token = hs256({ tenant: 'acme' })
  await other.inject({ url: '/users/1', headers: { authorization: `Bearer ${token}`, 'x-tenant': 'forged' } })
  t.equal(upstream.requests.at(-1)?.headers['x-tenant'], 'acme')
  t.equal(upstream.requests.at(-1)?.headers.authorization, `Bearer ${token}`)
  await other.inject({ url: '/catalog/1', headers: { 'x-tenant': 'forged' } })
  t.equal(upstream.requests.at(-1)?.headers['x-tenant'], undefined, 'client copies are removed even on public routes')
})

const invalid: Array<[string, unknown, string]> = [
  ['nothing configured', {}, 'auth'],
  ['short secret', { jwt: { secret: 'short' } }, 'auth.jwt.secret'],
  ['asymmetric algorithm for a secret', { jwt: { secret: SECRET, algorithms: ['RS256'] } }, 'auth.jwt.algorithms[0]'],
  ['none algorithm for an issuer', { jwt: { issuer: 'https://id.example.com', algorithms: ['none'] } }, 'auth.jwt.algorithms[0]'],
  ['clock tolerance over 60 s', { jwt: { secret: SECRET, clockTolerance: '2m' } }, 'auth.jwt.clockTolerance'],
  ['issuer not a URL', { jwt: { issuers: [{ issuer: 'id.example.com' }] } }, 'auth.jwt.issuers[0].issuer'],
  ['API key in clear', { apiKeys: { keys: { 'my-key': { id: 'a' } } } }, 'auth.apiKeys.keys.my-key'],
  ['public pattern without a slash', { jwt: { secret: SECRET }, public: ['GET health'] }, 'auth.public[0]'],
  ['public pattern with a dot segment', { jwt: { secret: SECRET }, public: ['/a/../b'] }, 'auth.public[0]']
]
for (const [label, auth, path] of invalid) {
  t.test(`invalid auth option refused at registration: ${label}`, async (t) => {
    const other = Fastify()
    other.register(gateway, { auth: auth as AuthOptions })
    await t.rejects(async () => { await other.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: new RegExp(`"${path.replace(/[.[\]]/g, '\\$&')}"`) })
  })
}

t.test('an invalid config.gateway on a route fails at boot, naming the route', async (t) => {
  const other = Fastify()
  await other.register(gateway, { auth: baseAuth })
  t.throws(() => other.get('/bad', { config: { gateway: { scopes: 'admin' as never } } }, async () => 'x'), { code: 'GATEWAY_ERR_INVALID_OPTION', message: /config\.gateway of \/bad\.scopes/ })
  await other.close()
})

t.test('a route registered before the gateway with an invalid config.gateway fails closed with a problem 500', async (t) => {
  const logs: string[] = []
  const other = Fastify({ logger: { level: 'error', stream: { write: (line: string) => { logs.push(line) } } }, ...gatewayServerOptions() })
  other.get('/early-bad', { config: { gateway: { scopes: 'admin' as never } } }, async () => 'never')
  await other.register(gateway, { auth: baseAuth })
  t.teardown(() => other.close())
  const response = await other.inject({ url: '/early-bad', headers: bearer({ scope: 'admin' }) })
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'GATEWAY_ERR_INTERNAL')
  t.notMatch(response.body, /scopes|expected/, 'the option error is logged, not sent')
  t.ok(logs.some((line) => line.includes('"route":"/early-bad"')), 'logged with the route')
})

t.test('claims that cannot be a header value are not forwarded; any Authorization is removed', async (t) => {
  const other = await build({ ...baseAuth, identityHeaders: { claims: { tenant: 'x-tenant' } } })
  t.teardown(() => other.close())
  const response = await other.inject({ url: '/users/1', headers: bearer({ tenant: 'acme\r\nx-admin: 1' }) })
  t.equal(response.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-tenant'], undefined)
  t.equal(upstream.requests.at(-1)?.headers['x-admin'], undefined)
})

t.test('clockTolerance 0 is accepted and applied', async (t) => {
  const strict = await build({ jwt: { secret: SECRET, audience: 'api', clockTolerance: 0 } })
  t.teardown(() => strict.close())
  const justExpired = hs256({ exp: Math.floor(Date.now() / 1000) - 2 })
  t.equal((await strict.inject({ url: '/users/1', headers: { authorization: `Bearer ${justExpired}` } })).statusCode, 401)
})

t.test('with auth: false, a route declaring scopes or an auth mode fails at boot', async (t) => {
  const other = Fastify()
  await other.register(gateway, { auth: false })
  t.throws(() => other.get('/x', { config: { gateway: { scopes: ['admin'] } } }, async () => 'x'), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  other.get('/y', async (request) => ({ consumer: request.consumer }))
  t.same((await other.inject({ url: '/y' })).json(), { consumer: null }, 'request.consumer is null, as typed')
  await other.close()
})

t.test('a misspelt config.gateway key fails at boot instead of leaving the route open', async (t) => {
  for (const auth of [baseAuth, false] as const) {
    const other = Fastify()
    await other.register(gateway, { auth })
    t.throws(() => other.get('/admin', { config: { gateway: { scope: ['admin'] } as never } }, async () => 'x'), { code: 'GATEWAY_ERR_INVALID_OPTION', message: /config\.gateway of \/admin\.scope/ }, `auth: ${auth === false ? 'false' : 'on'}`)
    t.throws(() => other.get('/odd', { config: { gateway: 'public' as never } }, async () => 'x'), { code: 'GATEWAY_ERR_INVALID_OPTION' })
    await other.close()
  }
  // Registered before the gateway: it cannot fail at boot, so it fails closed.
  const early = Fastify()
  early.get('/admin', { config: { gateway: { scope: ['admin'] } as never } }, async () => 'never')
  await early.register(gateway, { auth: baseAuth })
  t.teardown(() => early.close())
  const response = await early.inject({ url: '/admin', headers: bearer() })
  t.equal(response.statusCode, 500, 'a valid token without the intended scope does not get through')
  t.equal(response.json().code, 'GATEWAY_ERR_INTERNAL')
})
