// CORS (SECURITY.md § J): preflight before auth and never proxied; allowlisted origins only.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { gateway, gatewayServerOptions, type CorsOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())
const ALLOWED = 'https://app.example.com'

async function build (t: Test, cors: CorsOptions): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { cors, auth: { jwt: { secret: SECRET, audience: 'api' } }, services: { api: { upstream: upstream.url, prefix: '/api' } } })
  t.teardown(() => app.close())
  return app
}
const preflight = (origin: string) => ({ method: 'OPTIONS' as const, url: '/api/orders', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' } })

t.test('preflight from an allowed origin → 204 without credentials, never proxied', async (t) => {
  const app = await build(t, { origins: [ALLOWED], credentials: true })
  const before = upstream.requests.length
  const response = await app.inject(preflight(ALLOWED))
  t.equal(response.statusCode, 204)
  t.equal(response.headers['access-control-allow-origin'], ALLOWED)
  t.equal(response.headers['access-control-allow-credentials'], 'true')
  t.match(response.headers['access-control-allow-methods'], /POST/)
  t.match(response.headers.vary, /Origin/)
  t.equal(response.headers['access-control-max-age'], '600')
  const canary = await app.inject({ url: '/api/canary', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(canary.statusCode, 200)
  t.equal(upstream.requests.length, before + 1, 'only the canary reached the upstream')
})

t.test('a disallowed or look-alike origin gets no allow headers at all', async (t) => {
  const app = await build(t, { origins: [ALLOWED, /^https:\/\/[a-z0-9-]+\.preview\.example\.com$/], credentials: true, exposedHeaders: ['x-request-id'] })
  for (const origin of ['https://evil.example', 'https://app.example.com.evil.net', 'https://evil-app.example.com', 'http://app.example.com', 'https://app.example.com:8443', 'null', 'https://x.preview.example.com.evil.net']) {
    for (const request of [preflight(origin), { url: '/api/orders', headers: { origin, authorization: `Bearer ${hs256()}` } }]) {
      const response = await app.inject(request)
      const allowHeaders = Object.keys(response.headers).filter((name) => name.startsWith('access-control-'))
      t.same(allowHeaders, [], `${request.headers.origin} ${'method' in request ? 'preflight' : 'request'}: no access-control-* headers`)
      t.match(response.headers.vary, /Origin/, 'Vary: Origin still present')
    }
  }
  const preview = await app.inject(preflight('https://pr-42.preview.example.com'))
  t.equal(preview.headers['access-control-allow-origin'], 'https://pr-42.preview.example.com', 'an anchored pattern matches')
})

t.test('OPTIONS without Access-Control-Request-Method is a normal request: auth applies', async (t) => {
  const app = await build(t, { origins: [ALLOWED] })
  const before = upstream.requests.length
  const response = await app.inject({ method: 'OPTIONS', url: '/api/orders', headers: { origin: ALLOWED } })
  t.equal(response.statusCode, 401)
  t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  t.equal(upstream.requests.length, before)
})

t.test('simple requests: the allowed origin is echoed; credentials only when configured; "*" without credentials', async (t) => {
  const app = await build(t, { origins: [ALLOWED] })
  const response = await app.inject({ url: '/api/orders', headers: { origin: ALLOWED, authorization: `Bearer ${hs256()}` } })
  t.equal(response.statusCode, 200)
  t.equal(response.headers['access-control-allow-origin'], ALLOWED)
  t.equal(response.headers['access-control-allow-credentials'], undefined)
  const open = await build(t, { origins: ['*'] })
  const any = await open.inject({ url: '/api/orders', headers: { origin: 'https://anyone.example', authorization: `Bearer ${hs256()}` } })
  t.equal(any.headers['access-control-allow-origin'], '*')
  t.equal(any.headers['access-control-allow-credentials'], undefined)
})

t.test('the "null" origin is allowed only when listed exactly', async (t) => {
  const app = await build(t, { origins: ['null'] })
  t.equal((await app.inject(preflight('null'))).headers['access-control-allow-origin'], 'null')
})

const invalid: Array<[string, unknown, string]> = [
  ['no origins', { origins: [] }, 'cors.origins'],
  ['origin with a path', { origins: ['https://app.example.com/'] }, 'cors.origins[0]'],
  ['unanchored pattern', { origins: [/app\.example\.com/] }, 'cors.origins[0]'],
  ['wildcard with credentials', { origins: ['*'], credentials: true }, 'cors.credentials'],
  ['wildcard mixed', { origins: ['*', ALLOWED] }, 'cors.origins'],
  ['bad header name', { origins: [ALLOWED], allowedHeaders: ['x bad'] }, 'cors.allowedHeaders[0]']
]
for (const [label, cors, path] of invalid) {
  t.test(`invalid option refused at registration: ${label}`, async (t) => {
    const app = Fastify()
    app.register(gateway, { auth: false, cors: cors as CorsOptions })
    await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: new RegExp(`"${path.replace(/[.[\]]/g, '\\$&')}"`) })
  })
}
