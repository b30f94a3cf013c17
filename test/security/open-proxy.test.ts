// SECURITY.md § C (open proxy, SSRF), the rows request-target.test.ts does not have: CONNECT and
// TRACE in their other shapes, Upgrade tunnels, the upstream never taken from request data, and
// upstream TLS verified by default (black-box form of test/plugins/proxy-tls.test.ts).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { once } from 'node:events'
import { rootCertificates } from 'node:tls'
import type { AddressInfo } from 'node:net'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawExchange, rawGet, rawRequest } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'

const fixtures = new URL('../fixtures/tls/', import.meta.url)
const cert = readFileSync(new URL('upstream-cert.pem', fixtures))
const key = readFileSync(new URL('upstream-key.pem', fixtures))
let tlsHits = 0
const tlsUpstream = createServer({ cert, key }, (_req, res) => {
  tlsHits++
  res.end('from the TLS upstream')
})
tlsUpstream.listen(0, '127.0.0.1')
await once(tlsUpstream, 'listening')
const tlsPort = (tlsUpstream.address() as AddressInfo).port

const upstream = await createTestUpstream()
const evil = await createEvilListener()
const { app } = await buildTestGateway({
  services: {
    open: { upstream: upstream.url, prefix: '/public', rewritePrefix: '/public' },
    selfSigned: { upstream: `https://127.0.0.1:${tlsPort}`, prefix: '/tls-default', retries: 0 },
    pinned: { upstream: `https://127.0.0.1:${tlsPort}`, prefix: '/tls-pinned', ca: cert.toString(), retries: 0 },
    pinnedByName: { upstream: `https://localhost:${tlsPort}`, prefix: '/tls-by-name', ca: cert, retries: 0 },
    otherCa: { upstream: `https://127.0.0.1:${tlsPort}`, prefix: '/tls-other-ca', ca: rootCertificates[0], retries: 0 },
    plainAsTls: { upstream: `https://127.0.0.1:${upstream.port}`, prefix: '/tls-plain', retries: 0 }
  }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await evil.close()
  tlsUpstream.close()
})

const assertOnlyCanary = createCanary(upstream, '/public')

const E = (): string => `127.0.0.1:${evil.port}`
const CRLF = '\r\n'

const refusedMethods: Array<[string, () => string, number, string]> = [
  // [case, bytes sent, status, code]
  ['CONNECT in absolute form', () => `CONNECT http://${E()}/ HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}`, 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['CONNECT to a path', () => `CONNECT /public/x HTTP/1.1${CRLF}Host: 127.0.0.1${CRLF}${CRLF}`, 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['CONNECT with the tunnelled request in the same packet', () => `CONNECT ${E()} HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}GET /x HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}`, 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['CONNECT with Proxy-Authorization', () => `CONNECT ${E()} HTTP/1.1${CRLF}Host: ${E()}${CRLF}Proxy-Authorization: Basic dXNlcjpwYXNz${CRLF}${CRLF}`, 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['connect in lower case', () => `connect ${E()} HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}`, 400, 'GATEWAY_ERR_BAD_REQUEST'],
  ['TRACE with Max-Forwards: 0', () => rawGet('/public/x', ['Max-Forwards: 0', 'Cookie: session=secret-cookie'], 'TRACE'), 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['TRACE with a body', () => rawGet('/public/x', ['Content-Length: 11', 'Authorization: Bearer secret-token'], 'TRACE') + 'secret-body', 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['TRACE in absolute form', () => rawGet(`http://${E()}/x`, ['Cookie: session=secret-cookie'], 'TRACE'), 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'],
  ['OPTIONS in asterisk form', () => rawGet('*', [], 'OPTIONS'), 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET']
]

for (const [label, bytes, status, code] of refusedMethods) {
  t.test(`refused, never tunnelled or echoed: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawExchange(port, bytes())
    t.equal(response.status, status, 'status')
    t.equal(JSON.parse(response.body).code, code, 'code')
    if (status === 405) t.match(response.headers.allow, /GET/, 'a 405 lists the allowed methods')
    t.notMatch(response.raw, /secret-(?:cookie|token|body)|dXNlcjpwYXNz/, 'nothing of the request is echoed')
    t.notMatch(response.raw, /HTTP\/1\.1 200/, 'no tunnel established')
    t.equal(evil.connections, 0, 'E saw no connection')
    await assertOnlyCanary(t, { port, label, since: before })
  })
}

t.test('CONNECT: the connection is closed after the 405, bytes after it are never tunnelled', async (t) => {
  const response = await rawExchange(port, `CONNECT ${E()} HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}GET /x HTTP/1.1${CRLF}Host: ${E()}${CRLF}${CRLF}`)
  t.equal(response.status, 405)
  t.equal(response.closedByServer, true)
  t.equal((response.raw.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'one answer only')
})

t.test('a service cannot be configured to forward CONNECT, TRACE or TRACK', async (t) => {
  for (const method of ['CONNECT', 'TRACE', 'TRACK']) {
    await t.rejects(buildTestGateway({ services: { s: { upstream: upstream.url, prefix: '/s', methods: [method as never] } } }), { code: 'GATEWAY_ERR_INVALID_OPTION' }, method)
  }
})

// Tunnels by Upgrade (h2c smuggling, WebSocket to an arbitrary backend): Upgrade is hop-by-hop.
const upgrades: Array<[string, string[]]> = [
  ['h2c upgrade', ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']],
  ['websocket upgrade', ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']],
  ['Upgrade without Connection', ['Upgrade: h2c']]
]
for (const [label, headers] of upgrades) {
  t.test(`no tunnel by Upgrade: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(port, rawGet('/public/upgrade', headers).replace('Connection: close\r\n', ''))
    t.not(response.status, 101, 'never switches protocols')
    t.ok(response.status === 200 || (response.status !== undefined && response.status >= 400 && response.status < 500), `200 or 4xx, got ${response.status}`)
    const forwarded = upstream.requests.slice(before)
    for (const request of forwarded) {
      t.equal(request.headers.upgrade, undefined, 'Upgrade is not forwarded')
      t.notMatch(String(request.headers.connection ?? ''), /upgrade/i, 'nor Connection: upgrade')
      t.equal(request.headers['http2-settings'], undefined, 'nor the header Connection named')
    }
    t.equal(evil.connections, 0)
  })
}

// The upstream comes from the services table alone: request data that names another host changes nothing.
const steering: Array<[string, () => string, () => string[]]> = [
  // [case, target, extra header lines]
  ['Host names E', () => '/public/x', () => []],
  ['X-Forwarded-Host names E', () => '/public/x', () => [`X-Forwarded-Host: ${E()}`]],
  ['Forwarded host= names E', () => '/public/x', () => [`Forwarded: for=1.2.3.4;host=${E()};proto=http`]],
  ['X-Original-URL', () => '/public/x', () => [`X-Original-URL: http://${E()}/x`]],
  ['X-Rewrite-URL', () => '/public/x', () => [`X-Rewrite-URL: //${E()}/x`]],
  ['X-Forwarded-Port and X-Forwarded-Scheme', () => '/public/x', () => [`X-Forwarded-Port: ${evil.port}`, 'X-Forwarded-Scheme: https']],
  ['userinfo-looking path', () => `/public/@${E()}/x`, () => []],
  ['URL in a path segment', () => `/public/http:${E()}/x`, () => []],
  ['URL in the query', () => `/public/x?url=http://${E()}/&next=//${E()}`, () => []],
  ['authority-looking first segment', () => `/public/${E()}`, () => []]
]
for (const [label, target, extra] of steering) {
  t.test(`the upstream comes from configuration: ${label}`, async (t) => {
    const before = upstream.requests.length
    const lines = [`GET ${target()} HTTP/1.1`, `Host: ${label === 'Host names E' ? E() : '127.0.0.1'}`, 'Connection: close', ...extra(), '', '']
    const response = await rawRequest(port, lines.join(CRLF))
    t.equal(response.status, 200, 'proxied to the configured upstream')
    await upstream.waitForRequests(before + 1)
    const received = upstream.requests.at(-1)
    t.equal(received?.url, target(), 'the configured upstream received the target byte for byte')
    t.equal(received?.headers.host, `127.0.0.1:${upstream.port}`, 'with its own Host')
    t.equal(received?.headers['x-original-url'], label === 'X-Original-URL' ? `http://${E()}/x` : undefined, 'end-to-end headers pass as data, not as routing')
    t.equal(evil.connections, 0, 'E saw no connection')
  })
}

// Upstream TLS: verified by default (reply-from alone does not verify).
const tlsCases: Array<[string, string, number, string | undefined, boolean]> = [
  // [case, path, status, code, whether the TLS upstream may be reached]
  ['self-signed upstream, no CA configured', '/tls-default/x', 502, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', false],
  ['self-signed upstream, another CA configured', '/tls-other-ca/x', 502, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', false],
  ['plain-HTTP upstream configured as https', '/tls-plain/x', 502, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', false],
  ['self-signed upstream, its CA configured', '/tls-pinned/x', 200, undefined, true],
  ['self-signed upstream by DNS name, its CA configured', '/tls-by-name/x', 200, undefined, true]
]
for (const [label, path, status, code, reached] of tlsCases) {
  t.test(`upstream TLS: ${label}`, async (t) => {
    const hits = tlsHits
    const plainBefore = upstream.requests.length
    const response = await rawRequest(port, rawGet(path), { timeoutMs: 8_000 })
    t.equal(response.status, status, 'status')
    if (code !== undefined) {
      t.equal(JSON.parse(response.body).code, code, 'code')
      t.notMatch(response.body, 'from the TLS upstream')
      t.notMatch(response.body, new RegExp(`${tlsPort}|${upstream.port}|certificate|self.signed`, 'i'), 'no address or TLS detail')
    } else {
      t.equal(response.body, 'from the TLS upstream')
    }
    t.equal(tlsHits - hits, reached ? 1 : 0, reached ? 'one request over the verified connection' : 'no request sent over an unverified connection')
    if (path === '/tls-plain/x') await assertOnlyCanary(t, { port, label, since: plainBefore })
  })
}

t.test('at the end: the evil listener saw no connection; the upstream only got /public paths', async (t) => {
  t.equal(evil.connections, 0)
  for (const request of upstream.requests) t.match(request.url, /^\/public\//, request.url)
})
