// SECURITY.md § I (resources): request bodies over the limit are refused (and a streamed one reaches
// the upstream only as an aborted request), and slow or idle clients are cut off by timeouts —
// Fastify's own requestTimeout is 0 (none). Raw bytes over node:net.
import t, { type Test } from 'tap'
import { gatewayServerOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawExchange, rawGet } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'

const LIMIT = 64 * 1024
const REQUEST_TIMEOUT_MS = 1_000
const IDLE_TIMEOUT_MS = 1_500
// Node checks request timeouts every connectionsCheckingInterval (a quarter of the timeout here).
const CUT_OFF_MS = REQUEST_TIMEOUT_MS + 1_000

const upstream = await createTestUpstream()
const evil = await createEvilListener()
const { app } = await buildTestGateway(
  { services: { files: { upstream: upstream.url, prefix: '/files', rewritePrefix: '/files', bodyLimit: LIMIT } } },
  gatewayServerOptions({ requestTimeout: REQUEST_TIMEOUT_MS, idleTimeout: IDLE_TIMEOUT_MS })
)
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await evil.close()
})

const assertOnlyCanary = createCanary(upstream, '/files')
/** Only the canary arrived whole; a streamed body may have reached the upstream in part, within the limit. */
async function assertNothingWhole (t: Test, label: string, since: number): Promise<void> {
  const arrived = await assertOnlyCanary(t, { port, label, since, streamed: true })
  for (const request of arrived) t.ok(request.body.length <= LIMIT, `${label}: never more than the limit upstream (${request.body.length} bytes)`)
}

const CRLF = '\r\n'
const head = (...lines: string[]): string => ['POST /files/upload HTTP/1.1', 'Host: 127.0.0.1', ...lines, '', ''].join(CRLF)
const chunk = (size: number): string => `${size.toString(16)}${CRLF}${'a'.repeat(size)}${CRLF}`
const chunks = (count: number, size: number): string[] => Array.from({ length: count }, () => chunk(size))

const bodies: Array<[string, () => Array<string | Buffer>, number, string | undefined]> = [
  // [case, parts sent, status, code]
  ['chunked, 4 × the limit in 8 KiB chunks', () => [head('Transfer-Encoding: chunked'), ...chunks(32, 8 * 1024), `0${CRLF}${CRLF}`], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['chunked, one chunk over the limit', () => [head('Transfer-Encoding: chunked'), chunk(LIMIT + 1), `0${CRLF}${CRLF}`], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['chunked, one byte over the limit', () => [head('Transfer-Encoding: chunked'), ...chunks(8, 8 * 1024), chunk(1), `0${CRLF}${CRLF}`], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['chunked, over the limit and never finished', () => [head('Transfer-Encoding: chunked'), ...chunks(12, 8 * 1024)], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['declared Content-Length one byte over', () => [head(`Content-Length: ${LIMIT + 1}`), 'a'.repeat(LIMIT + 1)], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['declared Content-Length of a terabyte, nothing sent', () => [head('Content-Length: 1000000000000')], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['declared over the limit, with Expect: 100-continue', () => [head(`Content-Length: ${LIMIT * 4}`, 'Expect: 100-continue')], 413, 'GATEWAY_ERR_BODY_TOO_LARGE'],
  ['request headers over 16 KiB', () => [head(`X-Big: ${'b'.repeat(20 * 1024)}`, 'Content-Length: 0')], 431, 'GATEWAY_ERR_HEADERS_TOO_LARGE']
]
for (const [label, parts, status, code] of bodies) {
  t.test(`too large: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawExchange(port, parts(), { gapMs: 5, timeoutMs: 5_000 })
    t.equal(response.status === 100 ? Number(/\r\n\r\nHTTP\/1\.1 (\d{3})/.exec(response.raw)?.[1]) : response.status, status, 'status')
    t.match(response.raw, new RegExp(`"code":"${code ?? ''}"`), 'code')
    t.equal(response.closedByServer, true, 'the connection is closed, not left to drain')
    await assertNothingWhole(t, label, before)
  })
}

t.test('a streamed body over the limit: the upstream saw the request aborted, not truncated and passed as whole', async (t) => {
  const before = upstream.requests.length
  // The first chunks go out and reach the upstream before the limit is crossed.
  const response = await rawExchange(port, [head('Transfer-Encoding: chunked'), ...chunks(4, 8 * 1024), ...chunks(8, 8 * 1024), `0${CRLF}${CRLF}`], { gapMs: 30, timeoutMs: 5_000 })
  t.equal(response.status, 413)
  await upstream.waitForRequests(before + 1)
  const received = upstream.requests[before]
  t.equal(received.url, '/files/upload')
  t.equal(received.aborted, true, 'aborted')
  t.ok(received.body.length < LIMIT + 8 * 1024, `${received.body.length} bytes, never the whole body`)
})

t.test('controls: a body of exactly the limit passes whole, chunked or declared', async (t) => {
  for (const [label, parts] of [
    ['chunked', [head('Transfer-Encoding: chunked', 'Connection: close'), ...chunks(8, 8 * 1024), `0${CRLF}${CRLF}`]],
    ['declared', [head(`Content-Length: ${LIMIT}`, 'Connection: close'), 'a'.repeat(LIMIT)]]
  ] as const) {
    const response = await rawExchange(port, [...parts], { gapMs: 5 })
    t.equal(response.status, 200, label)
    t.equal(upstream.requests.at(-1)?.body.length, LIMIT, `${label}: whole`)
    t.equal(upstream.requests.at(-1)?.aborted, false, label)
  }
})

const slow: Array<[string, () => Array<string | Buffer>, number, number | undefined]> = [
  // [case, parts sent (gapMs apart), gap ms, status (undefined: closed without an answer is fine)]
  ['headers never finished', () => ['GET /files/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n'], 0, 408],
  ['headers drip-fed, a line every 200 ms', () => ['GET /files/x HTTP/1.1\r\nHost: 127.0.0.1\r\n', ...Array.from({ length: 40 }, (_, i) => `X-Drip-${i}: ${i}\r\n`)], 200, 408],
  ['headers drip-fed, a byte every 100 ms', () => [...'GET /files/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-Loris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'], 100, 408],
  ['a declared body never sent', () => [head('Content-Length: 1000'), 'only-a-few-bytes'], 0, 408],
  ['a body drip-fed, a byte every 100 ms', () => [head('Content-Length: 1000'), ...'a'.repeat(100)], 100, 408],
  ['a chunked body drip-fed, a chunk every 200 ms', () => [head('Transfer-Encoding: chunked'), ...chunks(40, 1)], 200, 408],
  ['a connection that sends nothing', () => [], 0, undefined]
]
for (const [label, parts, gapMs, status] of slow) {
  t.test(`cut off: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawExchange(port, parts(), { gapMs, timeoutMs: CUT_OFF_MS + 3_000 })
    t.equal(response.closedByServer, true, 'the gateway closed the connection')
    t.ok(response.elapsedMs < CUT_OFF_MS + 500, `within the timeout (${response.elapsedMs} ms)`)
    if (status !== undefined) {
      t.equal(response.status, status, 'status')
      t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_REQUEST_TIMEOUT', 'code')
    } else {
      t.ok(response.status === undefined || response.status === 408, `closed, or 408 (got ${response.status})`)
    }
    await assertNothingWhole(t, label, before)
  })
}

t.test('cut off: an idle keep-alive connection is closed after the idle timeout', async (t) => {
  const response = await rawExchange(port, rawGet('/files/keep').replace('Connection: close\r\n', ''), { timeoutMs: IDLE_TIMEOUT_MS + 3_000 })
  t.equal(response.status, 200, 'served first')
  t.equal(response.closedByServer, true, 'then closed by the gateway')
  // Node closes an idle keep-alive socket up to 1 s (keepAliveTimeoutBuffer) after its timeout.
  t.ok(response.elapsedMs < IDLE_TIMEOUT_MS + 1_500, `within the idle timeout (${response.elapsedMs} ms)`)
})

t.test('the recommended server options bound every wait by default (Fastify\'s requestTimeout is 0)', async (t) => {
  const options = gatewayServerOptions()
  t.equal(options.requestTimeout, 60_000)
  t.ok((options.http.headersTimeout ?? 0) > 0 && (options.http.headersTimeout ?? Infinity) <= 60_000, 'headersTimeout set')
  t.equal(options.http.requestTimeout, 60_000)
  t.equal(options.connectionTimeout, 60_000, 'idle connections closed')
  t.ok((options.http.connectionsCheckingInterval ?? Infinity) <= 30_000)
})

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
