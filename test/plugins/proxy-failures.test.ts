// Upstream faults: every one becomes a bounded, documented answer and the gateway stays up.
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { freePort } from '../../lib/testing/ports.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { rawGet, rawRequest } from '../helpers/raw-http.js'

const HEADERS_TIMEOUT_MS = 500

const upstream = await createTestUpstream()
// A port just released: nothing listens, connections are refused.
const downPort = await freePort()
const { app, logs } = await buildTestGateway({
  services: {
    flaky: { upstream: upstream.url, prefix: '/flaky', retries: 0, timeout: { connect: 1_000, headers: HEADERS_TIMEOUT_MS, body: HEADERS_TIMEOUT_MS } },
    down: { upstream: `http://127.0.0.1:${downPort}`, prefix: '/down' }
  }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
})

/** After every fault the gateway must still proxy a normal request. */
async function assertStillUp (t: Test): Promise<void> {
  const response = await app.inject({ url: '/flaky/alive' })
  t.equal(response.statusCode, 200, 'gateway still proxies')
}

function assertNoLeak (t: Test, text: string): void {
  t.notMatch(text, `127.0.0.1:${upstream.port}`, 'no upstream address')
  t.notMatch(text, `127.0.0.1:${downPort}`, 'no upstream address')
  t.notMatch(text, /ECONNREFUSED|UND_ERR|at .*\.(?:js|ts):\d+/, 'no library message or stack')
}

t.test('upstream down → 502 GATEWAY_ERR_UPSTREAM_UNAVAILABLE', async (t) => {
  const response = await app.inject({ url: '/down/x' })
  t.equal(response.statusCode, 502)
  t.match(response.headers['content-type'], /^application\/problem\+json/)
  const body = response.json()
  t.equal(body.code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.equal(body.requestId, response.headers['x-request-id'])
  assertNoLeak(t, response.body)
  await assertStillUp(t)
})

t.test('upstream that hangs → 504 within the timeout + 1 s', async (t) => {
  upstream.failNext(1, 'hang')
  const started = Date.now()
  const response = await app.inject({ url: '/flaky/slow' })
  const elapsed = Date.now() - started
  t.equal(response.statusCode, 504)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_TIMEOUT')
  t.ok(elapsed >= HEADERS_TIMEOUT_MS - 50, `waited for the timeout (${elapsed} ms)`)
  t.ok(elapsed < HEADERS_TIMEOUT_MS + 1_000, `answered within timeout + 1 s (${elapsed} ms)`)
  assertNoLeak(t, response.body)
  await assertStillUp(t)
})

t.test('invalid status line HTTP/1.1 888 → 502, no upstream header leaks onto it', async (t) => {
  upstream.failNext(1, { raw: 'HTTP/1.1 888 Weird\r\nx-internal: leak\r\ncontent-length: 2\r\n\r\nok' })
  const response = await app.inject({ url: '/flaky/weird' })
  t.equal(response.statusCode, 502)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.equal(response.headers['x-internal'], undefined)
  await assertStillUp(t)
})

t.test('garbage instead of a status line → 502', async (t) => {
  upstream.failNext(1, { raw: 'NOT HTTP AT ALL\r\n\r\n' })
  const response = await app.inject({ url: '/flaky/garbage' })
  t.equal(response.statusCode, 502)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  await assertStillUp(t)
})

t.test('connection reset before the response → 502', async (t) => {
  upstream.failNext(1, 'reset')
  const response = await app.inject({ url: '/flaky/reset' })
  t.equal(response.statusCode, 502)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  await assertStillUp(t)
})

// A typed body of a declared ≤ 16 KiB is read whole before anything is sent on (docs/proxy.md).
t.test('reset in the middle of a small body → 502, and nothing of the upstream\'s answer passed on', async (t) => {
  upstream.failNext(1, 'reset-mid-body')
  const response = await rawRequest(port, rawGet('/flaky/big'), { timeoutMs: 5_000 })
  t.equal(response.status, 502)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.equal(response.complete, true, 'a whole problem document')
  await assertStillUp(t)
})

t.test('a small body cut short → the problem carries none of the upstream\'s headers', async (t) => {
  const head = 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\nX-Internal: leak\r\nSet-Cookie: session=upstream\r\nETag: "v1"\r\nCache-Control: max-age=600\r\n\r\n'
  upstream.failNext(1, { raw: head + 'x'.repeat(100) })
  const response = await rawRequest(port, rawGet('/flaky/cut'), { timeoutMs: 5_000 })
  t.equal(response.status, 502)
  t.match(response.headers['content-type'], /^application\/problem\+json/)
  t.equal(JSON.parse(response.body).requestId, response.headers['x-request-id'], 'the gateway\'s own header stays')
  for (const name of ['x-internal', 'set-cookie', 'etag', 'cache-control']) t.equal(response.headers[name], undefined, `no ${name}`)
  t.equal(Number(response.headers['content-length']), Buffer.byteLength(response.body), 'the problem\'s own length')
  await assertStillUp(t)
})

t.test('a small body that stalls after the headers → 504 within the body timeout', async (t) => {
  upstream.failNext(1, 'stall-body')
  const started = Date.now()
  const response = await rawRequest(port, rawGet('/flaky/stall'), { timeoutMs: 5_000 })
  t.equal(response.status, 504)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_UPSTREAM_TIMEOUT')
  t.ok(Date.now() - started < HEADERS_TIMEOUT_MS + 1_000, 'cut off by the body timeout')
  await assertStillUp(t)
})

t.test('a large body broken midway → the client sees an aborted response, never a complete one', async (t) => {
  // Too large to be read whole: streamed, so its head and first bytes were already passed on.
  upstream.failNext(1, { raw: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n' + 'x'.repeat(20_000) })
  const response = await rawRequest(port, rawGet('/flaky/large'), { timeoutMs: 5_000 })
  t.equal(response.status, 200, 'headers were already sent')
  t.equal(response.complete, false, 'the body was cut short')
  t.equal(response.timedOut, false, 'the connection was closed, not left hanging')
  await assertStillUp(t)
})

t.test('with retries: 0, a 503 from the upstream is passed back once (reply-from alone would retry GET 10 times)', async (t) => {
  const before = upstream.requests.length
  upstream.failNext(1, { status: 503, body: { busy: true } })
  const response = await app.inject({ url: '/flaky/busy' })
  t.equal(response.statusCode, 503)
  t.same(response.json(), { busy: true }, 'the upstream body, untouched')
  t.equal(upstream.requests.length, before + 1, 'exactly one upstream call')
})

t.test('redirects from the upstream are passed back, never followed', async (t) => {
  const before = upstream.requests.length
  upstream.failNext(1, { status: 302, headers: { location: 'https://elsewhere.example/next' } })
  const response = await app.inject({ url: '/flaky/moved' })
  t.equal(response.statusCode, 302)
  t.equal(response.headers.location, 'https://elsewhere.example/next')
  t.equal(upstream.requests.length, before + 1)
})

t.test('logs name failures by code only: no upstream address, message or stack', async (t) => {
  const text = logs.join('')
  t.match(text, '"code":"ECONNREFUSED"', 'the refused connection is logged by its code')
  t.notMatch(text, `127.0.0.1:${upstream.port}`)
  t.notMatch(text, `127.0.0.1:${downPort}`)
  t.notMatch(text, /"stack"|\.(?:js|ts):\d+/)
})

t.test('once close() has begun, a new request gets a problem 503 GATEWAY_ERR_SHUTTING_DOWN, never the upstream', async (t) => {
  const slow = await createTestUpstream()
  slow.respond(() => ({ status: 200, body: { slow: true }, delay: 300 }))
  const { app } = await buildTestGateway({ services: { slow: { upstream: slow.url, prefix: '/slow' } } })
  t.teardown(async () => { await slow.close() })
  const port = await listen(app)
  // One keep-alive connection, busy when close() begins: Fastify leaves it open after its response,
  // so the next request on it deterministically arrives while the gateway is closing.
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => { socket.destroy() })
  let received = ''
  socket.setEncoding('latin1').on('data', (chunk: string) => { received += chunk })
  // The upstream's answer is streamed (chunked); the problem document has a Content-Length.
  const responses = async (count: number, ending: string): Promise<void> => {
    const deadline = Date.now() + 5_000
    while ((received.match(/HTTP\/1\.1 /g) ?? []).length < count || !received.endsWith(ending)) {
      if (Date.now() > deadline) throw new Error(`no response ${count} in 5 s: ${received}`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }
  socket.write('GET /slow/1 HTTP/1.1\r\nhost: gw\r\n\r\n')
  await slow.waitForRequests(1)
  const closing = app.close()
  await responses(1, '\r\n0\r\n\r\n')
  t.match(received, /^HTTP\/1\.1 200 /, 'the request in flight completes with 200')
  socket.write('GET /slow/2 HTTP/1.1\r\nhost: gw\r\n\r\n')
  await responses(2, '}')
  const second = received.slice(received.lastIndexOf('HTTP/1.1 '))
  t.match(second, /^HTTP\/1\.1 503 /)
  t.match(second, /\r\nretry-after: 1\r\n/i)
  t.match(second, /\r\ncontent-type: application\/problem\+json/i)
  t.equal(JSON.parse(second.slice(second.indexOf('\r\n\r\n') + 4)).code, 'GATEWAY_ERR_SHUTTING_DOWN')
  socket.destroy()
  await closing
  t.equal(slow.requests.length, 1, 'the refused request never reached the upstream')
})
