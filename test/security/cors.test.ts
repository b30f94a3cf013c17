// SECURITY.md § J (CORS), over raw sockets so that duplicated and odd Origin headers arrive as a
// browser or an attacker would send them: untrusted and look-alike origins get no allow header at
// all, credentials never with "*", Vary: Origin everywhere, preflights answered before auth and
// never proxied, an OPTIONS that is not a preflight treated like any request.
import t from 'tap'
import { createTestUpstream } from '../../lib/testing/index.js'
import type { CorsOptions } from '../../lib/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const APP = 'https://app.example.com'
const PREVIEW = /^https:\/\/[a-z0-9-]+\.preview\.example\.com$/
const upstream = await createTestUpstream({
  // An upstream that tries to widen the policy on every answer.
  script: (request) => request.url.startsWith('/api/leaky')
    ? { status: 200, headers: { vary: 'Accept-Encoding', 'access-control-allow-origin': '*', 'access-control-allow-credentials': 'true', 'access-control-allow-methods': 'TRACE' }, body: 'leaky' }
    : undefined
})
const evil = await createEvilListener()
async function start (cors: CorsOptions): Promise<number> {
  const { app } = await buildTestGateway({
    cors,
    auth: { jwt: { secret: SECRET, audience: 'api' } },
    services: {
      api: { upstream: upstream.url, prefix: '/api', rewritePrefix: '/api' },
      open: { upstream: upstream.url, prefix: '/open', rewritePrefix: '/open', public: true }
    }
  })
  t.teardown(() => app.close())
  return await listen(app)
}
const ports = {
  strict: await start({ origins: [APP, PREVIEW], credentials: true, exposedHeaders: ['x-request-id'] }),
  withNull: await start({ origins: [APP, 'null'], credentials: true }),
  any: await start({ origins: ['*'] })
}
t.teardown(async () => {
  await upstream.close()
  await evil.close()
})

const TOKEN = `Authorization: Bearer ${hs256()}`
const corsHeaders = (response: RawResponse): string[] => Object.keys(response.headers).filter((name) => name.startsWith('access-control-'))
const varies = (response: RawResponse): string[] => (response.headers.vary ?? '').split(',').map((token) => token.trim().toLowerCase())
const preflight = (path: string, origins: string[], extra: string[] = []): string =>
  rawGet(path, [...origins.map((origin) => `Origin: ${origin}`), 'Access-Control-Request-Method: PUT', 'Access-Control-Request-Headers: authorization', ...extra], 'OPTIONS')

const assertOnlyCanary = createCanary(upstream, '/api', [TOKEN])

// Origin header lines as sent; several lines reach Node as one comma-joined value.
const untrusted: Array<[string, string[]]> = [
  ['another site', ['https://evil.example']],
  ['allowed origin as a prefix', [`${APP}.evil.net`]],
  ['allowed host as a suffix', ['https://evil-app.example.com']],
  ['sub-domain of the allowed host', ['https://x.app.example.com']],
  ['http instead of https', ['http://app.example.com']],
  ['another port', [`${APP}:8443`]],
  ['explicit default port', [`${APP}:443`]],
  ['upper-case host', ['https://APP.EXAMPLE.COM']],
  ['trailing dot', [`${APP}.`]],
  ['trailing slash', [`${APP}/`]],
  ['with a path', [`${APP}/app`]],
  ['userinfo trick', [`${APP}@evil.example`]],
  ['encoded slash trick', [`${APP}%2F.evil.example`]],
  ['backslash trick', [`${APP}\\.evil.example`]],
  ['trailing no-break space (obs-text)', [`${APP}\u00a0`]],
  ['null, not listed', ['null']],
  ['Null in another case', ['Null']],
  ['wildcard as an origin', ['*']],
  ['empty', ['']],
  ['the allowed origin, then another (two lines)', [APP, 'https://evil.example']],
  ['another, then the allowed origin (two lines)', ['https://evil.example', APP]],
  ['both in one line', [`${APP}, https://evil.example`]],
  ['pattern: a look-alike after the match', ['https://pr-1.preview.example.com.evil.net']],
  ['pattern: a dot inside the label', ['https://a.b.preview.example.com']],
  ['pattern: upper case', ['https://PR-1.preview.example.com']]
]
for (const [label, origins] of untrusted) {
  t.test(`untrusted origin, credentials configured: ${label}`, async (t) => {
    const actual = await rawRequest(ports.strict, rawGet('/api/x', [...origins.map((origin) => `Origin: ${origin}`), TOKEN]))
    t.equal(actual.status, 200, 'CORS does not block the request; the browser does')
    t.same(corsHeaders(actual), [], 'no Access-Control-* header on the response')
    t.ok(varies(actual).includes('origin'), 'Vary: Origin')
    const before = upstream.requests.length
    const asked = await rawRequest(ports.strict, preflight('/api/x', origins))
    // An empty Origin names no origin: @fastify/cors's strict preflight check refuses it (400).
    t.equal(asked.status, origins.join('') === '' ? 400 : 204, 'answered by the gateway')
    t.same(corsHeaders(asked), [], 'no Access-Control-* header on the preflight')
    t.ok(varies(asked).includes('origin'), 'Vary: Origin on the preflight')
    await assertOnlyCanary(t, { port: ports.strict, label, since: before })
  })
}

const trusted: Array<[string, keyof typeof ports, string]> = [
  ['the exact allowed origin', 'strict', APP],
  ['an origin matching the anchored pattern', 'strict', 'https://pr-42.preview.example.com'],
  ['null, listed exactly', 'withNull', 'null']
]
for (const [label, name, origin] of trusted) {
  t.test(`allowed: ${label}`, async (t) => {
    const actual = await rawRequest(ports[name], rawGet('/api/x', [`Origin: ${origin}`, TOKEN]))
    t.equal(actual.status, 200)
    t.equal(actual.headers['access-control-allow-origin'], origin, 'echoed exactly, never "*"')
    t.equal(actual.headers['access-control-allow-credentials'], 'true')
    t.ok(varies(actual).includes('origin'))
    const before = upstream.requests.length
    const asked = await rawRequest(ports[name], preflight('/api/x', [origin]))
    t.equal(asked.status, 204, 'answered without a credential')
    t.equal(asked.headers['access-control-allow-origin'], origin)
    t.match(asked.headers['access-control-allow-methods'], /PUT/)
    t.ok(varies(asked).includes('origin'))
    await assertOnlyCanary(t, { port: ports.strict, label, since: before })
  })
}

t.test('never "*" with credentials: refused at boot, and an upstream cannot add it', async (t) => {
  await t.rejects(buildTestGateway({ cors: { origins: ['*'], credentials: true } }), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  for (const origin of [APP, 'https://evil.example']) {
    const response = await rawRequest(ports.strict, rawGet('/api/leaky', [`Origin: ${origin}`, TOKEN]))
    t.equal(response.status, 200)
    t.not(response.headers['access-control-allow-origin'], '*', `${origin}: never "*"`)
    t.equal(response.headers['access-control-allow-origin'], origin === APP ? APP : undefined, `${origin}: the gateway's decision only`)
    t.equal(response.headers['access-control-allow-methods'], undefined, 'no upstream CORS header survives')
    t.same(varies(response), ['accept-encoding', 'origin'], 'the upstream\'s Vary keeps Origin')
  }
  const any = await rawRequest(ports.any, rawGet('/api/x', ['Origin: https://anyone.example', TOKEN]))
  t.equal(any.headers['access-control-allow-origin'], '*')
  t.equal(any.headers['access-control-allow-credentials'], undefined, '"*" only ever without credentials')
})

const varyEverywhere: Array<[string, string]> = [
  ['401 without a credential', rawGet('/api/x', [`Origin: ${APP}`])],
  ['404 for an unknown path', rawGet('/nowhere', [`Origin: ${APP}`, TOKEN])],
  ['400 from the request guard', rawGet('/api/%2e%2e/x', [`Origin: ${APP}`, TOKEN])],
  ['a request without Origin', rawGet('/api/x', [TOKEN])],
  ['a public route, foreign origin', rawGet('/open/x', ['Origin: https://evil.example'])]
]
for (const [label, bytes] of varyEverywhere) {
  t.test(`Vary: Origin on every response: ${label}`, async (t) => {
    const response = await rawRequest(ports.strict, bytes)
    t.ok(varies(response).includes('origin'), `Vary: ${response.headers.vary}`)
    if (!bytes.includes(`Origin: ${APP}`)) t.same(corsHeaders(response), [], 'no allow header')
  })
}

const notPreflights: Array<[string, string, number, string | undefined, boolean]> = [
  // [case, bytes, status, code, reaches the upstream]
  ['OPTIONS without Access-Control-Request-Method, protected route', rawGet('/api/x', [`Origin: ${APP}`], 'OPTIONS'), 401, 'GATEWAY_ERR_UNAUTHENTICATED', false],
  ['OPTIONS with an empty Access-Control-Request-Method', rawGet('/api/x', [`Origin: ${APP}`, 'Access-Control-Request-Method: '], 'OPTIONS'), 401, 'GATEWAY_ERR_UNAUTHENTICATED', false],
  ['OPTIONS with Access-Control-Request-Method but no Origin', rawGet('/api/x', ['Access-Control-Request-Method: PUT'], 'OPTIONS'), 401, 'GATEWAY_ERR_UNAUTHENTICATED', false],
  ['OPTIONS without Origin, protected route', rawGet('/api/x', [], 'OPTIONS'), 401, 'GATEWAY_ERR_UNAUTHENTICATED', false],
  ['OPTIONS without Access-Control-Request-Method, with a credential', rawGet('/api/opt', [`Origin: ${APP}`, TOKEN], 'OPTIONS'), 200, undefined, true],
  ['OPTIONS without Access-Control-Request-Method, public route', rawGet('/open/opt', ['Origin: https://evil.example'], 'OPTIONS'), 200, undefined, true]
]
for (const [label, bytes, status, code, reaches] of notPreflights) {
  t.test(`not a preflight: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(ports.strict, bytes)
    t.equal(response.status, status, 'status')
    if (code !== undefined) t.equal(JSON.parse(response.body).code, code, 'code')
    if (reaches) {
      await upstream.waitForRequests(before + 1)
      t.equal(upstream.requests.at(-1)?.method, 'OPTIONS', 'proxied like any other method')
    } else {
      await assertOnlyCanary(t, { port: ports.strict, label, since: before })
    }
  })
}

const preflights: Array<[string, string]> = [
  ['with an invalid Authorization', preflight('/api/x', [APP], ['Authorization: Bearer not-a-token'])],
  ['asking for TRACE', rawGet('/api/x', [`Origin: ${APP}`, 'Access-Control-Request-Method: TRACE'], 'OPTIONS')],
  ['to an unknown path', preflight('/nowhere', [APP])],
  ['to a public route', preflight('/open/x', [APP])]
]
for (const [label, bytes] of preflights) {
  t.test(`preflight answered by the gateway, never proxied: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(ports.strict, bytes)
    t.equal(response.status, 204, 'status')
    t.notMatch(response.headers['access-control-allow-methods'] ?? '', /TRACE|CONNECT/, 'never offers TRACE or CONNECT')
    await assertOnlyCanary(t, { port: ports.strict, label, since: before })
  })
}

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
