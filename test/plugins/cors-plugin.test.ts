// The cors plugin composed by hand: exact origin allowlist, preflight answered before auth and upstream,
// nothing for foreign origins. (test/plugins/cors.test.ts covers it through the gateway umbrella.)
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { correlationId, gatewayServerOptions, proxy, requestGuard, sendProblem } from '../../lib/index.js'
import { cors, type CorsOptions } from '../../lib/plugins/cors.js'
import { createTestUpstream } from '../../lib/testing/index.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

const APP = 'https://app.example.com'
const PREVIEW = 'https://pr-42.preview.example.com'
const AUTHORIZED = { authorization: 'Bearer test' }

// Stands in for auth: a root onRequest hook registered after cors, refusing anything without a credential.
function fakeAuth (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
  if (request.headers.authorization !== AUTHORIZED.authorization) {
    sendProblem(reply, 'GATEWAY_ERR_UNAUTHENTICATED')
    return
  }
  done()
}

async function build (t: Test, options: CorsOptions): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions() })
  t.teardown(() => app.close())
  await app.register(correlationId)
  await app.register(requestGuard)
  await app.register(cors, options)
  app.addHook('onRequest', fakeAuth)
  await app.register(proxy, { services: { users: { upstream: upstream.url, prefix: '/users' } } })
  app.get('/app', async () => ({ ok: true }))
  await app.ready()
  return app
}

function corsHeaderNames (headers: Record<string, unknown>): string[] {
  return Object.keys(headers).filter((name) => name.startsWith('access-control-'))
}

function varies (headers: Record<string, unknown>): string[] {
  return String(headers.vary ?? '').split(',').map((token) => token.trim().toLowerCase())
}

/** Sends an authorized canary and asserts it is the only request the upstream saw since `before`. */
async function assertUpstreamUntouched (t: Test, app: FastifyInstance, before: number): Promise<void> {
  const canary = await app.inject({ url: '/users/canary', headers: AUTHORIZED })
  t.equal(canary.statusCode, 200, 'canary proxied')
  await upstream.waitForRequests(before + 1)
  t.equal(upstream.requests.length, before + 1, 'the upstream saw only the canary')
  t.equal(upstream.requests.at(-1)?.url, '/canary')
}

function preflight (url: string, origin: string, extra: Record<string, string> = {}) {
  return { method: 'OPTIONS' as const, url, headers: { origin, 'access-control-request-method': 'PUT', ...extra } }
}

t.test('an allowlist with credentials', async (t) => {
  const app = await build(t, {
    origins: [APP, /^https:\/\/[a-z0-9-]+\.preview\.example\.com$/],
    credentials: true,
    allowedHeaders: ['Authorization', 'Content-Type'],
    exposedHeaders: ['x-request-id']
  })

  for (const [label, url] of [['proxied route', '/users/1'], ['app route', '/app']]) {
    t.test(`preflight from an allowed origin is answered before auth (${label})`, async (t) => {
      const before = upstream.requests.length
      const response = await app.inject(preflight(url, APP, { 'access-control-request-headers': 'authorization' }))
      t.equal(response.statusCode, 204, 'never the 401 of the later hook')
      t.equal(response.headers['access-control-allow-origin'], APP)
      t.equal(response.headers['access-control-allow-credentials'], 'true')
      t.equal(response.headers['access-control-allow-methods'], 'GET, HEAD, POST, PUT, PATCH, DELETE')
      t.equal(response.headers['access-control-allow-headers'], 'authorization, content-type')
      t.equal(response.headers['access-control-max-age'], '600')
      t.ok(varies(response.headers).includes('origin'))
      t.ok(response.headers['x-request-id'], 'earlier hooks still ran')
      await assertUpstreamUntouched(t, app, before)
    })
  }

  t.test('preflight from an origin matching the pattern', async (t) => {
    const response = await app.inject(preflight('/users/1', PREVIEW))
    t.equal(response.statusCode, 204)
    t.equal(response.headers['access-control-allow-origin'], PREVIEW)
  })

  t.test('preflight from a foreign origin: 204 with no CORS header, still before auth and upstream', async (t) => {
    const before = upstream.requests.length
    const response = await app.inject(preflight('/users/1', 'https://evil.example.net', { 'access-control-request-headers': 'x-anything' }))
    t.equal(response.statusCode, 204)
    t.same(corsHeaderNames(response.headers), [])
    t.ok(varies(response.headers).includes('origin'))
    await assertUpstreamUntouched(t, app, before)
  })

  t.test('OPTIONS without Access-Control-Request-Method is an ordinary request', async (t) => {
    for (const headers of [{}, { origin: APP }]) {
      const response = await app.inject({ method: 'OPTIONS', url: '/users/1', headers })
      t.equal(response.statusCode, 401, 'reaches the auth hook')
      t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
    }
    const before = upstream.requests.length
    const response = await app.inject({ method: 'OPTIONS', url: '/users/1', headers: { origin: APP, ...AUTHORIZED } })
    t.equal(response.statusCode, 200)
    t.equal(response.headers['access-control-allow-origin'], APP)
    t.equal(upstream.requests.length, before + 1)
    t.equal(upstream.requests.at(-1)?.method, 'OPTIONS', 'proxied like any other method')
  })

  t.test('an actual request from an allowed origin', async (t) => {
    for (const url of ['/users/1', '/app']) {
      const response = await app.inject({ url, headers: { origin: APP, ...AUTHORIZED } })
      t.equal(response.statusCode, 200)
      t.equal(response.headers['access-control-allow-origin'], APP)
      t.equal(response.headers['access-control-allow-credentials'], 'true')
      t.equal(response.headers['access-control-expose-headers'], 'x-request-id')
      t.notOk(response.headers['access-control-allow-methods'], 'preflight headers only on preflight')
      t.ok(varies(response.headers).includes('origin'))
    }
    t.equal(upstream.requests.at(-1)?.headers.origin, APP, 'Origin reaches the upstream unchanged')
  })

  t.test('the 401 of auth carries the allow headers, so the browser can read it', async (t) => {
    const response = await app.inject({ url: '/users/1', headers: { origin: APP } })
    t.equal(response.statusCode, 401)
    t.equal(response.headers['access-control-allow-origin'], APP)
  })

  const foreign = [
    'https://app.example.com.evil.net',
    'https://evil-app.example.com',
    'http://app.example.com',
    'https://app.example.com:8443',
    'https://APP.example.com',
    'null',
    'https://pr-42.preview.example.com.evil.net',
    'https://a.pr-42.preview.example.com',
    `${APP}, https://evil.example.net`
  ]
  for (const origin of foreign) {
    t.test(`foreign origin ${origin} gets no CORS header`, async (t) => {
      for (const url of ['/users/1', '/app']) {
        const response = await app.inject({ url, headers: { origin, ...AUTHORIZED } })
        t.equal(response.statusCode, 200, 'CORS does not block; the browser does')
        t.same(corsHeaderNames(response.headers), [])
        t.ok(varies(response.headers).includes('origin'))
      }
    })
  }

  t.test('the upstream cannot widen the policy or drop Vary: Origin', async (t) => {
    upstream.respond(() => ({
      status: 200,
      headers: { vary: 'Accept-Encoding', 'access-control-allow-origin': '*', 'access-control-allow-credentials': 'true' },
      body: 'leaky'
    }))
    t.teardown(() => upstream.respond(() => undefined))
    const response = await app.inject({ url: '/users/1', headers: { origin: 'https://evil.example.net', ...AUTHORIZED } })
    t.equal(response.statusCode, 200)
    t.same(corsHeaderNames(response.headers), [])
    t.same(varies(response.headers), ['accept-encoding', 'origin'])
  })

  t.test('a request without Origin gets no CORS header but Vary: Origin', async (t) => {
    const response = await app.inject({ url: '/users/1', headers: AUTHORIZED })
    t.same(corsHeaderNames(response.headers), [])
    t.ok(varies(response.headers).includes('origin'))
  })
})

t.test('without credentials, and with the other options', async (t) => {
  const pattern = /^https:\/\/g\.example\.com$/g
  const alternation = /^https:\/\/a\.example\.com|https:\/\/b\.example\.com$/
  const app = await build(t, { origins: [APP, 'null', pattern, alternation], methods: ['GET', 'POST'], maxAge: '2h' })
  const response = await app.inject(preflight('/app', APP, { 'access-control-request-headers': 'x-custom' }))
  t.equal(response.statusCode, 204)
  t.notOk(response.headers['access-control-allow-credentials'])
  t.equal(response.headers['access-control-allow-methods'], 'GET, POST')
  t.equal(response.headers['access-control-allow-headers'], 'x-custom', 'no allowedHeaders: the requested ones')
  t.equal(response.headers['access-control-max-age'], '7200')
  const simple = await app.inject({ url: '/app', headers: { origin: APP, ...AUTHORIZED } })
  t.equal(simple.headers['access-control-allow-origin'], APP)
  t.notOk(simple.headers['access-control-allow-credentials'])
  t.notOk(simple.headers['access-control-expose-headers'])
  const opaque = await app.inject({ url: '/app', headers: { origin: 'null', ...AUTHORIZED } })
  t.equal(opaque.headers['access-control-allow-origin'], 'null', '"null" only when listed')
  for (let i = 0; i < 2; i++) {
    const global = await app.inject({ url: '/app', headers: { origin: 'https://g.example.com', ...AUTHORIZED } })
    t.equal(global.headers['access-control-allow-origin'], 'https://g.example.com', `a /g pattern matches every time (${i})`)
  }
  t.equal(pattern.lastIndex, 0, 'the caller\'s RegExp is untouched')
  const branch = await app.inject({ url: '/app', headers: { origin: 'https://a.example.com.evil.net', ...AUTHORIZED } })
  t.same(corsHeaderNames(branch.headers), [], 'a top-level alternation leaves no branch unanchored')
})

t.test('"*" without credentials', async (t) => {
  const app = await build(t, { origins: ['*'] })
  for (const origin of ['https://anyone.example.org', 'null']) {
    const response = await app.inject({ url: '/app', headers: { origin, ...AUTHORIZED } })
    t.equal(response.headers['access-control-allow-origin'], '*')
    t.notOk(response.headers['access-control-allow-credentials'])
    t.ok(varies(response.headers).includes('origin'))
  }
  const response = await app.inject(preflight('/users/1', 'https://anyone.example.org'))
  t.equal(response.statusCode, 204)
  t.equal(response.headers['access-control-allow-origin'], '*')
})

t.test('every invalid option is refused at registration, naming its path', async (t) => {
  const invalid: Array<[string, unknown, string]> = [
    ['not an object', 'https://app.example.com', 'cors'],
    ['no origins', {}, 'cors.origins'],
    ['empty origins', { origins: [] }, 'cors.origins'],
    ['origins not an array', { origins: APP }, 'cors.origins'],
    ['trailing slash', { origins: [`${APP}/`] }, 'cors.origins[0]'],
    ['path', { origins: [APP, `${APP}/api`] }, 'cors.origins[1]'],
    ['no scheme', { origins: ['app.example.com'] }, 'cors.origins[0]'],
    ['upper case', { origins: ['https://App.example.com'] }, 'cors.origins[0]'],
    ['default port', { origins: ['https://app.example.com:443'] }, 'cors.origins[0]'],
    ['not a string', { origins: [42] }, 'cors.origins[0]'],
    ['unanchored RegExp', { origins: [/example\.com/] }, 'cors.origins[0]'],
    ['RegExp without $', { origins: [/^https:\/\/example\.com/] }, 'cors.origins[0]'],
    ['"*" with credentials', { origins: ['*'], credentials: true }, 'cors.credentials'],
    ['"*" with other origins', { origins: [APP, '*'] }, 'cors.origins'],
    ['credentials not boolean', { origins: [APP], credentials: 'yes' }, 'cors.credentials'],
    ['no methods', { origins: [APP], methods: [] }, 'cors.methods'],
    ['bad method', { origins: [APP], methods: ['GET', 'GET POST'] }, 'cors.methods[1]'],
    ['no allowed headers', { origins: [APP], allowedHeaders: [] }, 'cors.allowedHeaders'],
    ['bad allowed header', { origins: [APP], allowedHeaders: ['x ok'] }, 'cors.allowedHeaders[0]'],
    ['exposed headers not an array', { origins: [APP], exposedHeaders: 'x-request-id' }, 'cors.exposedHeaders'],
    ['maxAge in seconds', { origins: [APP], maxAge: 600 }, 'cors.maxAge'],
    ['negative maxAge', { origins: [APP], maxAge: -1 }, 'cors.maxAge'],
    ['maxAge unit', { origins: [APP], maxAge: '10 minutes' }, 'cors.maxAge'],
    ['@fastify/cors option name', { origins: [APP], origin: APP }, 'cors.origin']
  ]
  for (const [label, options, path] of invalid) {
    const app = Fastify()
    await app.register(correlationId)
    await app.register(requestGuard)
    app.register(cors, options as CorsOptions)
    await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: `"${path}"` }, label)
    await app.close()
  }
})

t.test('registered before requestGuard, boot fails', async (t) => {
  const app = Fastify()
  await app.register(correlationId)
  app.register(cors, { origins: [APP] })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_ERR_PLUGIN_DEPENDENCY_NOT_REGISTERED' })
  await app.close()
})
