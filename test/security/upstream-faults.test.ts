// SECURITY.md § H (upstream faults and the breaker), black-box over real sockets: every fault ends
// in a documented answer within a bounded time or an aborted response — never a 500, never a
// response passed off as complete — retries only where repeating cannot act twice, and the breaker
// fails fast per service with exactly one half-open probe.
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { createTestUpstream, type TestUpstream, type UpstreamBehaviour } from '../../lib/testing/index.js'
import { freePort } from '../../lib/testing/ports.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js'

const TIMEOUT_MS = 500
const upstream = await createTestUpstream()
const evil = await createEvilListener()
const downPort = await freePort()
// Answer every request with `head` (and what follows it), then send nothing more and never close.
const stalled = new Set<Socket>()
async function stallingServer (head: string): Promise<{ url: string, close: () => void }> {
  const server = createServer((socket) => {
    stalled.add(socket)
    socket.once('data', () => socket.write(head))
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() }
}
// Headers announcing a body, and not a byte of it.
const headersOnly = await stallingServer('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n')
// A body too large to be read whole (docs/proxy.md): streamed, so part of it is passed on before the stall.
const LARGE = 100_000
const largeStall = await stallingServer(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${LARGE}\r\n\r\n${'x'.repeat(20_000)}`)
const { app } = await buildTestGateway({
  services: {
    headersOnly: { upstream: headersOnly.url, prefix: '/headers-only', retries: 0, breaker: false, timeout: { connect: 1_000, headers: TIMEOUT_MS, body: TIMEOUT_MS } },
    largeStall: { upstream: largeStall.url, prefix: '/large-stall', retries: 0, breaker: false, timeout: { connect: 1_000, headers: TIMEOUT_MS, body: TIMEOUT_MS } },
    down: { upstream: `http://127.0.0.1:${downPort}`, prefix: '/down', breaker: false },
    flaky: { upstream: upstream.url, prefix: '/flaky', retries: 0, breaker: false, timeout: { connect: 1_000, headers: TIMEOUT_MS, body: TIMEOUT_MS } },
    retried: { upstream: upstream.url, prefix: '/retried', retries: 2, breaker: false }
  }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await evil.close()
  for (const socket of stalled) socket.destroy()
  headersOnly.close()
  largeStall.close()
})

const CRLF = '\r\n'
async function send (path: string, { method = 'GET', headers = [] as string[], body = '', timeoutMs = 5_000, to = port } = {}): Promise<RawResponse & { ms: number }> {
  const started = Date.now()
  const extra = body === '' ? headers : [...headers, `Content-Length: ${Buffer.byteLength(body)}`]
  const response = await rawRequest(to, rawGet(path, extra, method) + body, { timeoutMs })
  return { ...response, ms: Date.now() - started }
}

/** After every fault the gateway still proxies a normal request. */
async function assertStillUp (t: Test, label: string): Promise<void> {
  const response = await send('/flaky/alive')
  t.equal(response.status, 200, `${label}: the gateway still answers`)
  t.match(response.body, /"ok":true/)
}

// A typed body of a declared ≤ 16 KiB is read whole before anything is sent on, so when it breaks
// the client gets the problem; a larger, chunked or untyped one is streamed, and once part of it
// was sent on an aborted response is the only honest answer. `orAborted`: the head was valid and
// the body broke before its first byte, which a streamed body may or may not have sent on yet.
type Expected = { status: number, code: string, orAborted?: true } | 'aborted'
const faults: Array<[string, string, UpstreamBehaviour | undefined, Expected, number]> = [
  // [case, path, what the upstream does, what the client must get, within ms]
  ['upstream down (connection refused)', '/down/x', undefined, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['upstream hangs', '/flaky/x', 'hang', { status: 504, code: 'GATEWAY_ERR_UPSTREAM_TIMEOUT' }, TIMEOUT_MS + 1_000],
  ['headers, then a stalled small body', '/flaky/x', 'stall-body', { status: 504, code: 'GATEWAY_ERR_UPSTREAM_TIMEOUT' }, TIMEOUT_MS + 1_000],
  ['headers, then a large body stalled midway', '/large-stall/x', undefined, 'aborted', TIMEOUT_MS + 1_000],
  ['reset before the response', '/flaky/x', 'reset', { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['reset mid-body, small body', '/flaky/x', 'reset-mid-body', { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['typed small body shorter than its Content-Length, then close', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Type: text/plain${CRLF}Content-Length: 100${CRLF}${CRLF}short` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['untyped body shorter than its Content-Length, then close', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Length: 100${CRLF}${CRLF}short` }, 'aborted', 1_000],
  ['large body cut short, then close', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Type: text/plain${CRLF}Content-Length: ${LARGE}${CRLF}${CRLF}${'x'.repeat(20_000)}` }, 'aborted', 1_000],
  ['invalid status code 888', '/flaky/x', { raw: `HTTP/1.1 888 Weird${CRLF}Content-Length: 2${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['two-digit status code', '/flaky/x', { raw: `HTTP/1.1 20 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['garbage instead of a status line', '/flaky/x', { raw: `NOT HTTP AT ALL${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['only a 100 Continue, then close', '/flaky/x', { raw: `HTTP/1.1 100 Continue${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['two Content-Length values', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}Content-Length: 20${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['Content-Length and chunked together', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}2${CRLF}ok${CRLF}0${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['Content-Length not a number', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Length: two${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['bare LF line endings', '/flaky/x', { raw: 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok' }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['NUL in a header value', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}X-Bad: a\x00b${CRLF}Content-Length: 2${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['obs-fold in a header', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}X-Folded: a${CRLF} b${CRLF}Content-Length: 2${CRLF}${CRLF}ok` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  ['unsolicited 101 Switching Protocols', '/flaky/x', { raw: `HTTP/1.1 101 Switching Protocols${CRLF}Connection: Upgrade${CRLF}Upgrade: websocket${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' }, 1_000],
  // The head is valid and the body breaks.
  ['a malformed chunk after the first one', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}hello${CRLF}zz${CRLF}` }, 'aborted', 1_000],
  ['chunked body cut before the last chunk', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}hello${CRLF}` }, 'aborted', 1_000],
  // …before its first byte: nothing was sent on yet, so the client must get the problem.
  ['an invalid first chunk size', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}zz${CRLF}hello${CRLF}0${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', orAborted: true }, 1_000],
  ['headers, then close before any body byte', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Content-Length: 100${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', orAborted: true }, 1_000],
  ['chunked headers, then close before any chunk', '/flaky/x', { raw: `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}` }, { status: 502, code: 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE', orAborted: true }, 1_000],
  ['headers, then a stall before any body byte', '/headers-only/x', undefined, { status: 504, code: 'GATEWAY_ERR_UPSTREAM_TIMEOUT' }, TIMEOUT_MS + 1_000]
]

for (const [label, path, behaviour, expected, withinMs] of faults) {
  t.test(`upstream fault: ${label}`, async (t) => {
    if (behaviour !== undefined) upstream.failNext(1, behaviour)
    const response = await send(path)
    t.ok(response.ms < withinMs, `answered within ${withinMs} ms (${response.ms} ms)`)
    t.equal(response.timedOut, false, 'never left hanging')
    t.not(response.status, 500, 'never a 500')
    if (expected === 'aborted' || (expected.orAborted === true && response.status === 200)) {
      t.equal(response.status, 200, 'the upstream\'s headers were passed on')
      t.equal(response.complete, false, 'the response was aborted, never completed')
    } else {
      t.equal(response.status, expected.status, 'status')
      t.match(response.headers['content-type'], /^application\/problem\+json/, 'a problem document')
      t.equal(response.body.startsWith('{') ? JSON.parse(response.body).code : undefined, expected.code, 'code')
      t.notMatch(response.body, new RegExp(`${upstream.port}|${downPort}|ECONNREFUSED|UND_ERR|HPE_|HTTP/1\\.1 protocol|other side closed|\\n\\s+at `), 'no address, library code, message or stack')
    }
    await assertStillUp(t, label)
  })
}

t.test('a redirect to another host is passed back, never followed', async (t) => {
  upstream.failNext(1, { status: 302, headers: { location: `http://127.0.0.1:${evil.port}/internal` } })
  const response = await send('/flaky/moved')
  t.equal(response.status, 302)
  t.equal(evil.connections, 0, 'E saw no connection')
})

const retryRows: Array<[string, string, string, string, UpstreamBehaviour, number, number]> = [
  // [case, method, path, body, upstream answer (every time), client status, upstream calls]
  ['POST answered 503 (retries: 2 configured)', 'POST', '/retried/orders', '{"n":1}', { status: 503 }, 503, 1],
  ['POST reset after it was sent', 'POST', '/retried/orders', '{"n":1}', 'reset', 502, 1],
  ['PATCH answered 503', 'PATCH', '/retried/orders/1', '{"n":2}', { status: 503 }, 503, 1],
  ['PUT answered 502', 'PUT', '/retried/orders/1', '{"n":3}', { status: 502 }, 502, 1],
  ['DELETE answered 503', 'DELETE', '/retried/orders/1', '', { status: 503 }, 503, 1],
  ['GET with a body answered 503 (the body cannot be replayed)', 'GET', '/retried/search', '{"q":1}', { status: 503 }, 503, 1],
  ['GET reset after it was sent (the upstream may have acted)', 'GET', '/retried/x', '', 'reset', 502, 1],
  ['GET answered 503 every time: 1 + 2 attempts, then the upstream\'s answer', 'GET', '/retried/x', '', { status: 503 }, 503, 3],
  ['HEAD answered 502 every time: bounded the same way', 'HEAD', '/retried/x', '', { status: 502 }, 502, 3],
  ['GET with retries: 0', 'GET', '/flaky/x', '', { status: 503 }, 503, 1]
]
for (const [label, method, path, body, behaviour, status, calls] of retryRows) {
  t.test(`retries: ${label}`, async (t) => {
    const before = upstream.requests.length
    upstream.failNext(10, behaviour)
    const response = await send(path, { method, body, headers: body === '' ? [] : ['Content-Type: application/json'] })
    upstream.failNext(0, 'reset')
    t.equal(response.status, status, 'status')
    await upstream.waitForRequests(before + calls)
    await assertStillUp(t, label)
    t.equal(upstream.requests.length - before - 1, calls, `${calls} upstream call(s), besides the liveness check`)
  })
}

// The breaker: its own gateway per row, so that each row starts closed.
const POLICY = { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeout: 300 }
interface BreakerEnv { app: FastifyInstance, port: number, a: TestUpstream, b: TestUpstream }
async function breakerGateway (t: Test): Promise<BreakerEnv> {
  const a = await createTestUpstream()
  const b = await createTestUpstream()
  const built = await buildTestGateway({
    services: { a: { upstream: a.url, prefix: '/a', retries: 0, breaker: POLICY }, b: { upstream: b.url, prefix: '/b', retries: 0, breaker: POLICY } }
  })
  const gatewayPort = await listen(built.app)
  t.teardown(async () => { await built.app.close(); await a.close(); await b.close() })
  return { app: built.app, port: gatewayPort, a, b }
}
async function openA (env: BreakerEnv, behaviour: UpstreamBehaviour = { status: 503 }): Promise<void> {
  env.a.respond(() => behaviour)
  for (let i = 0; i < POLICY.volumeThreshold; i++) await send('/a/x', { to: env.port })
}

t.test('breaker: after the threshold, 503 fast with Retry-After, the upstream frozen', async (t) => {
  const env = await breakerGateway(t)
  await openA(env)
  const frozen = env.a.requests.length
  for (let i = 0; i < 10; i++) {
    const response = await send('/a/x', { to: env.port })
    t.equal(response.status, 503)
    t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_CIRCUIT_OPEN')
    t.match(response.headers['retry-after'], /^[1-9]\d*$/)
    t.ok(response.ms < 100, `failed fast (${response.ms} ms)`)
  }
  t.equal(env.a.requests.length, frozen, 'the upstream saw none of them')
})

for (const [label, behaviour] of [
  ['small bodies read whole', 'reset-mid-body'],
  ['large bodies streamed', { raw: `HTTP/1.1 200 OK${CRLF}Content-Type: text/plain${CRLF}Content-Length: ${LARGE}${CRLF}${CRLF}${'x'.repeat(20_000)}` }]
] as const) {
  t.test(`breaker: bodies broken midway are failures too (${label}), and crash nothing`, async (t) => {
    const env = await breakerGateway(t)
    await openA(env, behaviour)
    const response = await send('/a/x', { to: env.port })
    t.equal(response.status, 503, 'the broken bodies opened the breaker')
    t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_CIRCUIT_OPEN')
    t.equal((await send('/b/x', { to: env.port })).status, 200, 'the gateway still answers')
  })
}

t.test('breaker: 4xx answers do not count', async (t) => {
  const env = await breakerGateway(t)
  for (const status of [400, 401, 403, 404, 409, 422, 429]) {
    env.a.respond(() => ({ status }))
    for (let i = 0; i < 4; i++) t.equal((await send('/a/x', { to: env.port })).status, status, `${status} passed back`)
  }
  env.a.respond(() => undefined)
  t.equal((await send('/a/x', { to: env.port })).status, 200, '28 client errors later, still closed')
  t.equal(env.a.requests.length, 29, 'every request reached the upstream')
})

t.test('breaker: one service\'s failures never open another\'s', async (t) => {
  const env = await breakerGateway(t)
  await openA(env, 'reset')
  t.equal((await send('/a/x', { to: env.port })).status, 503)
  for (let i = 0; i < 5; i++) t.equal((await send('/b/x', { to: env.port })).status, 200, 'b serves')
  t.equal(env.b.requests.length, 5)
})

for (const outcome of ['success', 'failure'] as const) {
  t.test(`breaker: half-open lets exactly one probe through (${outcome})`, async (t) => {
    const env = await breakerGateway(t)
    await openA(env)
    const deadline = Date.now() + 3_000
    while (env.app.gateway.breaker('a')?.state !== 'half-open' && Date.now() < deadline) await sleep(20)
    t.equal(env.app.gateway.breaker('a')?.state, 'half-open')
    const before = env.a.requests.length
    env.a.respond(() => outcome === 'success' ? { status: 200, body: 'ok', delay: 100 } : { status: 500, delay: 100 })
    const responses = await Promise.all(Array.from({ length: 20 }, async () => await send('/a/probe', { to: env.port })))
    t.equal(env.a.requests.length - before, 1, 'exactly one request reached the upstream')
    t.equal(responses.filter((response) => response.status === 503).length, 19, 'the others failed fast')
    const after = await send('/a/next', { to: env.port })
    t.equal(after.status, outcome === 'success' ? 200 : 503, outcome === 'success' ? 'the probe closed the breaker' : 'the failed probe re-opened it')
  })
}

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
