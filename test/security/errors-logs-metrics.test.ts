// SECURITY.md § K (errors, logs, metrics), black-box over real sockets: every error the gateway can
// produce is a problem document that names no stack, path, address, token, key or JWKS URL; the
// request id is validated before it is trusted; credentials never reach a log line; and metric
// labels stay bounded whatever the client sends. A recording upstream U, an evil listener E, two
// identity providers that fail on demand, a real Redis for the store rows.
import t, { type Test } from 'tap'
import { createHash, randomUUID } from 'node:crypto'
import { connect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { GATEWAY_ERRORS, gateway, gatewayServerOptions, type GatewayErrorCode } from '../../lib/index.js'
import { createIdentityProvider, createTestUpstream, startTestRedis, type JwksMode } from '../../lib/testing/index.js'
import { freePort } from '../../lib/testing/ports.js'
import { listen } from '../helpers/gateway.js'
import { addressLeaks, INTERNALS, leaksIn, samplesOf, seriesOf, type Leak } from '../helpers/leaks.js'
import { sendAll } from '../helpers/raw-pool.js'
import { createEvilListener, rawExchange, rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const JWKS_TIMEOUT_MS = 300
const HEADERS_TIMEOUT_MS = 300
const REQUEST_TIMEOUT_MS = 1_000
const VALID_ID = /^[A-Za-z0-9._:+=-]{1,128}$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const PROBLEM_FIELDS = new Set(['type', 'title', 'status', 'code', 'requestId', 'detail'])
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')

// Every credential any row sends: none may appear in a body, a log line or a label. Consumer ids
// and a marker put in paths may appear in logs (the access line names the consumer), never in a
// body or a label.
const KEY = `k3y-${randomUUID()}`
const COOKIE = `c00kie-${randomUUID()}`
const CREDENTIALS: string[] = [KEY, COOKIE, SECRET]
const KEY_CONSUMER = `key-consumer-${randomUUID().slice(0, 8)}`
const SUB = `sub-${randomUUID().slice(0, 8)}`
const MARKER = `mark-${randomUUID()}`
const SECRETS = [KEY_CONSUMER, SUB, MARKER, ...CREDENTIALS]
const secret = <T extends string>(value: T): T => { CREDENTIALS.push(value); SECRETS.push(value); return value }
const token = (claims: Record<string, unknown> = {}): string => {
  const signed = secret(hs256({ sub: SUB, ...claims }))
  secret(signed.split('.')[2]) // the signature alone
  return signed
}
const bearer = (value: string): string => `Authorization: Bearer ${value}`

const upstream = await createTestUpstream({
  script: ({ url }) => {
    if (url.endsWith('/hang')) return 'hang'
    if (url.endsWith('/reset')) return 'reset'
    if (url.endsWith('/malformed')) return { raw: 'NOT HTTP AT ALL\r\n\r\n' }
    if (url.startsWith('/flaky/')) return { status: 500 }
    if (url.startsWith('/slow/')) return { status: 200, body: { slow: true }, delay: 300 }
    return undefined
  }
})
const evil = await createEvilListener()
const downPort = await freePort()
const idp = await createIdentityProvider() // JWKS URL configured, cold cache: every fetch fails
const discovered = await createIdentityProvider() // discovery only, down from the start
discovered.setMode('down')
const redis = await startTestRedis()

// The main gateway: logs at trace into `logs`, metrics allowlisted to loopback.
const logs: string[] = []
const app = Fastify({ ...gatewayServerOptions({ logger: { level: 'trace', stream: { write: (line: string) => { logs.push(line) } } }, requestTimeout: REQUEST_TIMEOUT_MS }) })
const routes = new Set<string>()
app.addHook('onRoute', (route) => { routes.add(route.url) })
// A host hook that logs what it sees before the gateway's hooks: redaction must cover it too.
app.addHook('onRequest', function hostLogsEverything (request, _reply, done) {
  request.log.info({ headers: request.headers, req: request }, 'host hook')
  done()
})
// Registered before the gateway, so their invalid policies cannot fail at boot: they fail closed.
app.get('/bad-policy', { config: { gateway: { scopes: 'admin' as unknown as string[] } } }, async () => 'never')
app.get('/bad-limit', { config: { gateway: { public: true, rateLimit: { max: 'many' as unknown as number, window: '1m' } } } }, async () => 'never')
const services = {
  api: { upstream: upstream.url, prefix: '/api', rewritePrefix: '/api', retries: 0, breaker: false, bodyLimit: 1024, timeout: { connect: 1_000, headers: HEADERS_TIMEOUT_MS, body: HEADERS_TIMEOUT_MS } },
  scoped: { upstream: upstream.url, prefix: '/scoped', rewritePrefix: '/scoped', scopes: ['admin'], breaker: false },
  limited: { upstream: upstream.url, prefix: '/limited', rewritePrefix: '/limited', rateLimit: { max: 1, window: '1m' }, breaker: false },
  open: { upstream: upstream.url, prefix: '/open', rewritePrefix: '/open', public: true, breaker: false },
  down: { upstream: [`http://127.0.0.1:${downPort}`, `http://127.0.0.1:${downPort}/base`], prefix: '/down', retries: 0, breaker: false },
  flaky: { upstream: upstream.url, prefix: '/flaky', rewritePrefix: '/flaky', retries: 0, breaker: { volumeThreshold: 1, resetTimeout: '1m' } },
  busy: { upstream: upstream.url, prefix: '/busy', rewritePrefix: '/busy', retries: 0, breaker: false, maxConcurrent: 1, timeout: { headers: 500, body: 500 } }
} as const
await app.register(gateway, {
  auth: {
    jwt: {
      secret: SECRET,
      audience: 'api',
      issuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, audience: 'test-api' }, { issuer: discovered.issuer, audience: 'test-api' }],
      jwks: { timeout: JWKS_TIMEOUT_MS, refetchInterval: 0 }
    },
    apiKeys: {
      keys: { [digest(KEY)]: { id: KEY_CONSUMER, scopes: ['read'] } },
      query: 'api_key',
      lookupTimeout: 200,
      lookup: async (key) => {
        if (key === 'lookup-throws') throw new Error(`lookup failed: connect ECONNREFUSED 127.0.0.1:${downPort} at ${import.meta.url}`)
        if (key === 'lookup-hangs') return await new Promise<never>(() => {})
        return null
      }
    }
  },
  metrics: { expose: { allow: ['127.0.0.1'] }, processMetrics: false },
  services
})
app.get('/items/:id', { config: { gateway: { public: true } } }, async () => 'item')
app.get('/max-throws', {
  config: { gateway: { public: true, rateLimit: { max: () => { throw new Error(`no plan at ${import.meta.url}`) }, window: '1m' } } }
}, async () => 'never')
const port = await listen(app)

// A second gateway on a real Redis, failing closed: for the store rows.
const client = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
client.on('error', () => {}) // expected once Redis is paused or killed
const keyPrefix = `k-${randomUUID().slice(0, 8)}:`
const stored = Fastify({ ...gatewayServerOptions() })
await stored.register(gateway, {
  auth: { jwt: { secret: SECRET, audience: 'api' } },
  rateLimit: { store: client, perConsumer: { max: 5, window: '1m' }, onStoreError: 'closed', storeRetryInterval: 200, keyPrefix },
  services: { api: { upstream: upstream.url, prefix: '/api', rewritePrefix: '/api' } },
  health: true
})
const storedPort = await listen(stored)
t.teardown(async () => {
  await app.close()
  await stored.close()
  client.disconnect()
  await redis.stop()
  await upstream.close()
  await idp.close()
  await discovered.close()
  await evil.close()
})

// Addresses of the upstreams, the identity providers, Redis, E and the gateways themselves.
const portOf = (url: string): number => Number(new URL(url).port)
const PORTS = [upstream.port, downPort, portOf(idp.issuer), portOf(discovered.issuer), redis.port, evil.port, port, storedPort]
const LEAKS: Leak[] = [...INTERNALS, ...addressLeaks(PORTS), idp.jwksUri, discovered.issuer, '.well-known', /jwks/i, keyPrefix, redis.url]

/** A problem document with the code, a request id, and none of the leaks or secrets. */
function assertProblem (t: Test, response: RawResponse, code: GatewayErrorCode): void {
  const { status } = GATEWAY_ERRORS[code]
  t.equal(response.status, status, 'status')
  t.match(response.headers['content-type'], /^application\/problem\+json/, 'a problem document')
  let body: Record<string, unknown> = {}
  try {
    body = JSON.parse(response.body)
  } catch {
    t.fail(`not JSON: ${response.body.slice(0, 200)}`)
  }
  t.equal(body.code, code, 'code')
  t.equal(body.status, status, 'status in the body')
  t.match(body.requestId, VALID_ID, 'a request id')
  if (response.headers['x-request-id'] !== undefined) t.equal(body.requestId, response.headers['x-request-id'], 'the reply\'s request id')
  t.same(Object.keys(body).filter((field) => !PROBLEM_FIELDS.has(field)), [], 'only problem fields')
  t.same(leaksIn(response.body, [...LEAKS, ...SECRETS]), [], 'no stack, path, address, token, key or JWKS URL')
}

let canaries = 0
/** Since `since`, U saw exactly `expected` and then the canary (proof, not a sleep). */
async function assertUpstreamSaw (t: Test, since: number, expected: readonly string[]): Promise<void> {
  const canary = `/open/canary-${++canaries}`
  t.equal((await rawRequest(port, rawGet(canary))).status, 200, 'the gateway still answers')
  await upstream.waitForRequests(since + expected.length + 1)
  t.same(upstream.requests.slice(since).map((request) => request.url), [...expected, canary], 'what the upstream received')
}

const get = async (target: string, headers: string[] = [], method = 'GET', to = port): Promise<RawResponse> => await rawRequest(to, rawGet(target, headers, method))
const all = [bearer('not-even-a-jwt'), `Cookie: sid=${COOKIE}`] // sent along with every row's own credential

interface ErrorRow {
  label: string
  code: GatewayErrorCode
  send: () => Promise<RawResponse>
  /** The urls U receives (besides the canary). Default: none. */
  reaches?: readonly string[]
  setup?: () => void | Promise<void>
}
const now = Math.floor(Date.now() / 1000)
const jwksToken = (issuer: typeof idp): string => secret(issuer.sign({ sub: SUB }))
const idpRow = (mode: JwksMode, code: GatewayErrorCode): ErrorRow => ({
  label: `identity provider "${mode}", cold cache`,
  code,
  setup: () => { idp.setMode(mode, 1_000) },
  send: async () => await get('/api/x', [bearer(jwksToken(idp))])
})
const errorRows: ErrorRow[] = [
  // 400 GATEWAY_ERR_BAD_REQUEST: Node's parser, the router, the proxy's own refusal.
  { label: 'Content-Length and Transfer-Encoding together (parser)', code: 'GATEWAY_ERR_BAD_REQUEST', send: async () => await get('/api/x', [bearer(token()), 'Content-Length: 3', 'Transfer-Encoding: chunked'], 'POST') },
  { label: 'NUL in a header value (parser)', code: 'GATEWAY_ERR_BAD_REQUEST', send: async () => await get('/api/x', [`X-Api-Key: ${KEY}\x00`]) },
  { label: 'unknown method TRACK (parser)', code: 'GATEWAY_ERR_BAD_REQUEST', send: async () => await get('/api/x', [bearer(token())], 'TRACK') },
  { label: 'route parameter over maxParamLength (router)', code: 'GATEWAY_ERR_BAD_REQUEST', send: async () => await get(`/items/${MARKER}${'a'.repeat(100)}`) },
  { label: 'segment starting with .. on a proxied route (fastify-reply-from#460)', code: 'GATEWAY_ERR_BAD_REQUEST', send: async () => await get(`/api/.../${MARKER}`, [bearer(token())]) },
  // 400 GATEWAY_ERR_BAD_REQUEST_TARGET
  { label: 'encoded dot segments', code: 'GATEWAY_ERR_BAD_REQUEST_TARGET', send: async () => await get(`/api/%2e%2e/admin?api_key=${KEY}`, [bearer(token())]) },
  { label: 'percent-encoding the router cannot decode (FST_ERR_BAD_URL echoes the path)', code: 'GATEWAY_ERR_BAD_REQUEST_TARGET', send: async () => await get(`/api/%ff/${MARKER}`) },
  { label: 'absolute form naming E', code: 'GATEWAY_ERR_BAD_REQUEST_TARGET', send: async () => await get(`http://127.0.0.1:${evil.port}/x`, [bearer(token())]) },
  // 401
  { label: 'no credential', code: 'GATEWAY_ERR_UNAUTHENTICATED', send: async () => await get('/api/x', [`Cookie: sid=${COOKIE}`]) },
  { label: 'invalid token', code: 'GATEWAY_ERR_UNAUTHENTICATED', send: async () => await get('/api/x', [bearer(token().slice(0, -6) + 'AAAAAA')]) },
  { label: 'expired token', code: 'GATEWAY_ERR_UNAUTHENTICATED', send: async () => await get('/api/x', [bearer(token({ exp: now - 3_600 }))]) },
  { label: 'unknown API key in the header', code: 'GATEWAY_ERR_UNAUTHENTICATED', send: async () => await get('/api/x', [`X-Api-Key: ${secret(`${KEY}-nope`)}`]) },
  { label: 'unknown API key in the query', code: 'GATEWAY_ERR_UNAUTHENTICATED', send: async () => await get(`/api/x?api_key=${secret(`nope-${KEY}`)}`) },
  idpRow('empty', 'GATEWAY_ERR_UNAUTHENTICATED'),
  // 403, 405, 408, 413, 429, 431
  { label: 'valid token without the scope', code: 'GATEWAY_ERR_FORBIDDEN', send: async () => await get('/scoped/x', [bearer(token()), ...all.slice(1)]) },
  { label: 'TRACE', code: 'GATEWAY_ERR_METHOD_NOT_ALLOWED', send: async () => await get('/api/x', [bearer(token()), ...all.slice(1)], 'TRACE') },
  {
    label: 'CONNECT to E',
    code: 'GATEWAY_ERR_METHOD_NOT_ALLOWED',
    send: async () => await rawRequest(port, `CONNECT 127.0.0.1:${evil.port} HTTP/1.1\r\nHost: 127.0.0.1:${evil.port}\r\nProxy-Authorization: Basic ${secret(Buffer.from(`u:${KEY}`).toString('base64'))}\r\n\r\n`)
  },
  { label: 'headers never finished', code: 'GATEWAY_ERR_REQUEST_TIMEOUT', send: async () => await rawExchange(port, `GET /api/x HTTP/1.1\r\nHost: a\r\n${bearer(token())}\r\n`, { timeoutMs: REQUEST_TIMEOUT_MS + 2_000 }) },
  { label: 'declared body over the limit', code: 'GATEWAY_ERR_BODY_TOO_LARGE', send: async () => await rawRequest(port, rawGet('/api/upload', [bearer(token()), 'Content-Length: 2048'], 'POST') + MARKER.repeat(60)) },
  {
    label: 'second request over the route\'s limit',
    code: 'GATEWAY_ERR_RATE_LIMITED',
    reaches: ['/limited/x'],
    send: async () => {
      const limited = token()
      await get('/limited/x', [bearer(limited)])
      return await get('/limited/x', [bearer(limited)])
    }
  },
  { label: 'headers over 16 KiB', code: 'GATEWAY_ERR_HEADERS_TOO_LARGE', send: async () => await get('/api/x', [bearer(token()), `Cookie: sid=${COOKIE}; pad=${'p'.repeat(20 * 1024)}`]) },
  // 500: fails closed, says nothing
  { label: 'route registered before the gateway with invalid scopes', code: 'GATEWAY_ERR_INTERNAL', send: async () => await get('/bad-policy', [bearer(token())]) },
  { label: 'route registered before the gateway with an invalid limit', code: 'GATEWAY_ERR_INTERNAL', send: async () => await get('/bad-limit', all) },
  { label: 'a limit whose max() throws', code: 'GATEWAY_ERR_INTERNAL', send: async () => await get('/max-throws', all) },
  // 502, 503, 504
  { label: 'upstream refuses the connection', code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', send: async () => await get('/down/x', [bearer(token())]) },
  { label: 'upstream resets', code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', reaches: ['/api/reset'], send: async () => await get('/api/reset', [bearer(token())]) },
  { label: 'upstream answers garbage', code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', reaches: ['/api/malformed'], send: async () => await get('/api/malformed', [bearer(token())]) },
  {
    label: 'circuit open after one 500',
    code: 'GATEWAY_ERR_CIRCUIT_OPEN',
    reaches: ['/flaky/x'],
    send: async () => {
      await get('/flaky/x', [bearer(token())])
      return await get('/flaky/x', [bearer(token())])
    }
  },
  {
    label: 'service busy (maxConcurrent 1)',
    code: 'GATEWAY_ERR_SERVICE_BUSY',
    reaches: ['/busy/hang'],
    send: async () => {
      const before = upstream.requests.length
      const first = get('/busy/hang', [bearer(token())])
      await upstream.waitForRequests(before + 1)
      const second = await get('/busy/x', [bearer(token())])
      await first
      return second
    }
  },
  idpRow('down', 'GATEWAY_ERR_AUTH_UNAVAILABLE'),
  idpRow('hang', 'GATEWAY_ERR_AUTH_UNAVAILABLE'),
  idpRow('slow', 'GATEWAY_ERR_AUTH_UNAVAILABLE'),
  idpRow('garbage', 'GATEWAY_ERR_AUTH_UNAVAILABLE'),
  { label: 'discovery document down, cold cache', code: 'GATEWAY_ERR_AUTH_UNAVAILABLE', send: async () => await get('/api/x', [bearer(jwksToken(discovered))]) },
  { label: 'API-key lookup throws', code: 'GATEWAY_ERR_AUTH_UNAVAILABLE', send: async () => await get('/api/x', ['X-Api-Key: lookup-throws']) },
  { label: 'API-key lookup hangs', code: 'GATEWAY_ERR_AUTH_UNAVAILABLE', send: async () => await get('/api/x', ['X-Api-Key: lookup-hangs']) },
  {
    label: 'Redis paused, onStoreError closed',
    code: 'GATEWAY_ERR_RATE_LIMIT_STORE',
    setup: () => { redis.pause() },
    send: async () => await get('/api/x', [bearer(token())], 'GET', storedPort)
  },
  {
    label: 'Redis killed, onStoreError closed',
    code: 'GATEWAY_ERR_RATE_LIMIT_STORE',
    setup: async () => { redis.resume(); await redis.kill(); await sleep(250) }, // past storeRetryInterval: the store is tried again
    send: async () => await get('/api/x', [bearer(token())], 'GET', storedPort)
  },
  { label: 'readiness with Redis killed', code: 'GATEWAY_ERR_NOT_READY', send: async () => await get('/ready', all, 'GET', storedPort) },
  { label: 'upstream never answers', code: 'GATEWAY_ERR_UPSTREAM_TIMEOUT', reaches: ['/api/hang'], send: async () => await get('/api/hang', [bearer(token()), `Cookie: sid=${COOKIE}`]) }
]

// The idp rows run in this order: 'empty' turns the cache fresh and empty, so it goes last.
errorRows.push(errorRows.splice(errorRows.findIndex((row) => row.label.includes('"empty"')), 1)[0])
for (const row of errorRows) {
  t.test(`error body: ${row.code} — ${row.label}`, async (t) => {
    await row.setup?.()
    const before = upstream.requests.length
    assertProblem(t, await row.send(), row.code)
    await assertUpstreamSaw(t, before, row.reaches ?? [])
  })
}

t.test('error body: GATEWAY_ERR_SHUTTING_DOWN — a request on a connection still open once close() began', async (t) => {
  const closing = Fastify({ ...gatewayServerOptions() })
  await closing.register(gateway, { auth: { apiKeys: { keys: { [digest(KEY)]: { id: KEY_CONSUMER } } } }, services: { slow: { upstream: upstream.url, prefix: '/slow', rewritePrefix: '/slow' } } })
  const closingPort = await listen(closing)
  const socket = connect(closingPort, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  let received = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => { received += chunk })
  const responses = async (count: number, ending: string): Promise<void> => {
    for (let i = 0; i < 500 && ((received.match(/HTTP\/1\.1 /g) ?? []).length < count || !received.endsWith(ending)); i++) await sleep(10)
  }
  const before = upstream.requests.length
  socket.write(`GET /slow/1 HTTP/1.1\r\nhost: gw\r\nx-api-key: ${KEY}\r\n\r\n`)
  await upstream.waitForRequests(before + 1)
  const closed = closing.close()
  await responses(1, '\r\n0\r\n\r\n')
  socket.write(`GET /slow/2 HTTP/1.1\r\nhost: gw\r\nx-api-key: ${KEY}\r\n\r\n`)
  await responses(2, '}')
  const second = received.slice(received.lastIndexOf('HTTP/1.1 '))
  const headerEnd = second.indexOf('\r\n\r\n')
  const headers = Object.fromEntries(second.slice(0, headerEnd).split('\r\n').slice(1).map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
  assertProblem(t, { status: Number(second.split(' ')[1]), headers, body: second.slice(headerEnd + 4), complete: true, timedOut: false }, 'GATEWAY_ERR_SHUTTING_DOWN')
  socket.destroy()
  await closed
  t.same(upstream.requests.slice(before).map((request) => request.url), ['/slow/1'], 'the refused request never reached the upstream')
})

t.test('every code in lib/errors.ts has a row', async (t) => {
  const covered = new Set<string>([...errorRows.map((row) => row.code), 'GATEWAY_ERR_SHUTTING_DOWN'])
  t.same(Object.keys(GATEWAY_ERRORS).filter((code) => !covered.has(code)), [])
})

// The request id: validated before it is trusted, else replaced; a valid one travels everywhere.
async function accessLineOf (id: string): Promise<Record<string, unknown> | undefined> {
  for (let i = 0; i < 100; i++) {
    const line = logs.find((text) => text.includes('"msg":"access"') && text.includes(`"reqId":"${id}"`))
    if (line !== undefined) return JSON.parse(line)
    await sleep(10)
  }
  return undefined
}

const validIds: Array<[string, string]> = [
  ['a UUID', randomUUID()],
  ['every allowed character', 'Ab9._:+=-'],
  ['128 characters', 'r'.repeat(127) + '1']
]
for (const [label, id] of validIds) {
  t.test(`request id kept: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await get(`/open/rid-${label.length}`, [`X-Request-Id: ${id}`])
    t.equal(response.status, 200)
    t.equal(response.headers['x-request-id'], id, 'in the reply')
    await upstream.waitForRequests(before + 1)
    t.equal(upstream.requests.at(-1)?.headers['x-request-id'], id, 'at the upstream')
    t.equal((await accessLineOf(id))?.status, 200, 'in the access line')
    const refused = await get('/api/x', [`X-Request-Id: ${id}`])
    t.equal(JSON.parse(refused.body).requestId, id, 'in a problem body')
  })
}

const latin1 = (text: string): string => Buffer.from(text).toString('latin1') // UTF-8 bytes on the wire
const oddIds: Array<[string, string, 'replaced' | 'refused']> = [
  // [case, header value as sent, outcome: replaced by a UUID, or Node's parser refused the request]
  ['129 characters', 'r'.repeat(128) + '2', 'replaced'],
  ['4 KiB', 'x'.repeat(4096), 'replaced'],
  ['empty', '', 'replaced'],
  ['a space', 'abc def', 'replaced'],
  ['double quotes', '"abc"', 'replaced'],
  ['single quote and angle brackets', '\'<script>', 'replaced'],
  ['a tab', 'abc\tdef', 'replaced'],
  ['percent-encoded CRLF', 'abc%0d%0aSet-Cookie:%20x=1', 'replaced'],
  ['JSON breaking out of a log line', 'a","level":60,"msg":"forged', 'replaced'],
  ['non-ASCII (UTF-8)', latin1('idé-1'), 'replaced'],
  ['non-ASCII (U+2028)', latin1('a\u2028b'), 'replaced'],
  ['sent twice (joined by Node)', 'abc\r\nX-Request-Id: def', 'replaced'],
  ['bare CR', 'abc\rX-Injected: 1', 'refused'],
  ['bare LF', 'abc\nX-Injected: 1', 'refused'],
  ['CRLF + obs-fold continuation', 'abc\r\n X-Injected: 1', 'refused'],
  ['NUL', 'abc\x00def', 'refused'],
  ['DEL', 'abc\x7fdef', 'refused']
]
for (const [i, [label, value, outcome]] of oddIds.entries()) {
  t.test(`request id ${outcome}: ${label}`, async (t) => {
    const before = upstream.requests.length
    const target = `/open/odd-${i}`
    const response = await rawRequest(port, `GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Request-Id: ${value}\r\n\r\n`)
    if (outcome === 'refused') {
      assertProblem(t, response, 'GATEWAY_ERR_BAD_REQUEST')
      t.match(JSON.parse(response.body).requestId, UUID, 'a fresh id in the body')
      await assertUpstreamSaw(t, before, [])
      return
    }
    t.equal(response.status, 200)
    const id = response.headers['x-request-id']
    t.match(id, UUID, 'replaced by a fresh UUID')
    await assertUpstreamSaw(t, before, [target])
    t.equal(upstream.requests[before].headers['x-request-id'], id, 'the upstream got the replacement')
    t.equal((await accessLineOf(id))?.status, 200, 'the access line carries the replacement')
  })
}

t.test('no gateway log line carries a refused request id, and every line is one JSON object', async (t) => {
  // The host hook logs the headers as sent, the refused id with them: that line is the host's own.
  const gatewayLines = logs.filter((line) => !line.includes('"msg":"host hook"'))
  const distinctive = oddIds.map(([, value]) => value).filter((value) => value.length > 5 && !value.startsWith('abc'))
  t.same(distinctive.filter((value) => gatewayLines.some((line) => line.includes(value))), [])
  const broken = logs.filter((line) => { try { return typeof JSON.parse(line) !== 'object' } catch { return true } })
  t.same(broken, [], 'no line was split or forged')
  t.notOk(logs.some((line) => JSON.parse(line).level === 60), 'no forged fatal line')
})

// Credentials never reach a log line: proxied, refused, unknown and failing routes.
const redactionRows: Array<[string, () => string, number]> = [
  // [case, request (raw), status]
  ['proxied, JWT', () => rawGet(`/api/r1?api_key=${KEY}&access_token=${secret(`at-${randomUUID()}`)}`, [bearer(token()), `Cookie: sid=${COOKIE}`, `X-Api-Key: ${KEY}`]), 200],
  ['proxied, key in the query', () => rawGet(`/api/r2?a=1&api_key=${KEY}`, [`Cookie: sid=${COOKIE}; other=${COOKIE}`]), 200],
  ['proxied, key in the header', () => rawGet('/api/r3', [`X-Api-Key: ${KEY}`, `Proxy-Authorization: Basic ${secret(Buffer.from(`p:${KEY}`).toString('base64'))}`]), 200],
  ['public route, credentials sent anyway', () => rawGet(`/open/r4?api_key=${KEY}`, [bearer(token()), `Cookie: sid=${COOKIE}`, `X-Api-Key: ${KEY}`]), 200],
  ['401, invalid token', () => rawGet(`/api/r5?api_key=${secret(`q-${randomUUID()}`)}`, [bearer(token().slice(0, -4) + 'AAAA'), `Cookie: sid=${COOKIE}`]), 401],
  ['401, unknown key', () => rawGet('/api/r6', [`X-Api-Key: ${secret(`unknown-${randomUUID()}`)}`, `Cookie: sid=${COOKIE}`]), 401],
  ['403, missing scope', () => rawGet(`/scoped/r7?api_key=${KEY}`, [bearer(token()), `Cookie: sid=${COOKIE}`]), 403],
  ['429, over the limit', () => rawGet(`/limited/r8?api_key=${KEY}`, [bearer(token({ sub: SUB })), `Cookie: sid=${COOKIE}`]), 429],
  ['404, unknown path', () => rawGet(`/nowhere/${randomUUID()}?api_key=${KEY}&token=${secret(`t-${randomUUID()}`)}`, [bearer(token()), `Cookie: sid=${COOKIE}`, `X-Api-Key: ${KEY}`]), 404],
  ['500, invalid policy', () => rawGet(`/bad-policy?api_key=${KEY}`, [bearer(token()), `Cookie: sid=${COOKIE}`, `X-Api-Key: ${KEY}`]), 500],
  ['502, refused upstream', () => rawGet(`/down/r9?api_key=${KEY}`, [bearer(token()), `Cookie: sid=${COOKIE}`]), 502],
  ['504, hanging upstream', () => rawGet(`/api/r10/hang?api_key=${KEY}`, [`X-Api-Key: ${KEY}`, `Cookie: sid=${COOKIE}`]), 504]
]
for (const [label, request, status] of redactionRows) {
  t.test(`no credential in the logs: ${label}`, async (t) => {
    const id = randomUUID()
    const first = logs.length
    const response = await rawRequest(port, request().replace('\r\n\r\n', `\r\nX-Request-Id: ${id}\r\n\r\n`))
    t.equal(response.status, status, 'status')
    t.ok(await accessLineOf(id), 'the request was logged')
    const lines = logs.slice(first)
    t.ok(lines.some((line) => line.includes('"msg":"host hook"') && line.includes(id)), 'the host hook logged headers and the request')
    t.same(CREDENTIALS.filter((value) => lines.some((line) => line.includes(value))), [], 'no credential in any line')
  })
}

t.test('no credential in any log line of the whole run, at trace level', async (t) => {
  t.ok(logs.length > 100, `${logs.length} lines`)
  t.same(CREDENTIALS.filter((value) => logs.some((line) => line.includes(value))), [])
})

// Metrics: bounded labels whatever the paths, and no credential in any of them.
const scrape = async (t: Test): Promise<string> => {
  const response = await get('/metrics')
  t.equal(response.status, 200, 'scraped from loopback')
  return response.body
}
const rand = (): string => Math.random().toString(36).slice(2, 10)
const kinds: Array<(i: number) => string> = [
  (i) => rawGet(`/r/${rand()}/${i}`, [], 'GET'),
  (i) => rawGet(`/r/${rand()}?api_key=${rand()}&i=${i}`, [], 'POST'),
  (i) => rawGet(`/api/${rand()}/${i}`, [bearer(token())], 'GET'),
  (i) => rawGet(`/api/${rand()}/${i}?api_key=${rand()}`, [], 'DELETE'),
  (i) => rawGet(`/open/${rand()}/${i}?q=${rand()}`, [`X-Request-Id: ${rand()}`], 'PUT'),
  (i) => rawGet(`/api/%2e%2e/${rand()}/${i}`, [], 'GET'),
  (i) => rawGet(`/%ff${rand()}/${i}`, [], 'GET'),
  (i) => rawGet(`/items/${rand()}${i}`, [`Cookie: sid=${COOKIE}`], 'GET')
]
const send = async (t: Test, count: number): Promise<void> => {
  const requests = Array.from({ length: count }, (_, i) => kinds[i % kinds.length](i).replace('Connection: close\r\n', ''))
  const statuses = new Set((await sendAll(port, requests, { size: 8 })).map((response) => response.status))
  t.notOk(statuses.has(undefined), 'every request answered')
}

t.test('10,000 random paths do not grow the metric series; labels are patterns, never paths or credentials', async (t) => {
  await send(t, kinds.length * 4)
  await scrape(t)
  const before = seriesOf(await scrape(t))
  const started = Date.now()
  await send(t, 10_000)
  const text = await scrape(t)
  const after = seriesOf(text)
  t.same([...after].filter((series) => !before.has(series)), [], `no new series (${before.size} before, ${Date.now() - started} ms for 10,000 requests)`)
  t.match(text, /gateway_requests_total\{[^}]*route="unmatched"/, 'unmatched requests are counted as unmatched')

  const allowed: Record<string, (value: string) => boolean> = {
    route: (value) => value === 'unmatched' || routes.has(value),
    service: (value) => value === '' || value in services,
    method: (value) => /^(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|TRACE|CONNECT)$/.test(value),
    status_code: (value) => /^[1-5]\d\d$/.test(value),
    status_class: (value) => /^[0-5]xx$/.test(value) || value === 'error',
    le: (value) => value === '+Inf' || Number.isFinite(Number(value)),
    kind: (value) => ['timeout', 'connect', 'broken', 'circuit_open', 'busy'].includes(value),
    limit: (value) => value === 'consumer' || value === 'route' || value in services,
    reason: (value) => ['missing', 'invalid_token', 'expired', 'invalid_key', 'insufficient_scope', 'unavailable'].includes(value),
    target: (value) => /^\d*$/.test(value),
    to: (value) => ['open', 'half-open', 'closed'].includes(value)
  }
  const offending = samplesOf(text).flatMap(({ name, labels }) => Object.entries(labels)
    .filter(([label, value]) => allowed[label] === undefined || !allowed[label](value))
    .map(([label, value]) => `${name}{${label}="${value}"}`))
  t.same(offending, [], 'every label is bounded')
  const sampleLines = text.split('\n').filter((line) => !line.startsWith('#')).join('\n')
  t.same(leaksIn(sampleLines, [...SECRETS, ...addressLeaks(PORTS), '?', '%2e', '%ff', '/r/', '/nowhere/', 'api_key']), [], 'no credential, consumer id, address or raw path')
})

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
