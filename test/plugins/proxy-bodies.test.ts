// Request bodies on their way upstream: a small typed body is read whole and sent as one buffer
// (lib/internal/body-limit.ts), byte for byte and under the client's own headers; anything else is
// streamed. A client that stops halfway through a small body never reaches the upstream.
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { connect as connectH2, constants as h2 } from 'node:http2'
import Fastify from 'fastify'
import { gateway } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { WHOLE_BODY_MAX_BYTES } from '../../lib/internal/body-limit.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createCanary } from '../helpers/canary.js'

const upstream = await createTestUpstream()
const { app, logs } = await buildTestGateway({
  services: { files: { upstream: upstream.url, prefix: '/files', rewritePrefix: '/files' } }
})
const port = await listen(app)
const assertOnlyCanary = createCanary(upstream, '/files')
t.teardown(async () => {
  await app.close()
  await upstream.close()
})

/** Sends `body` through the gateway and returns what the upstream received. */
async function forward (t: Test, method: string, body: Buffer, headers: Record<string, string>) {
  const before = upstream.requests.length
  const response = await app.inject({ method, url: '/files/upload', headers, payload: body })
  t.equal(response.statusCode, 200, `${method} answered by the upstream`)
  t.equal(upstream.requests.length, before + 1, 'one request upstream')
  const received = upstream.requests[before]
  t.equal(received.aborted, false)
  t.ok(received.body.equals(body), `the upstream got the same ${body.length} bytes`)
  return received
}

t.test('small typed bodies reach the upstream byte for byte, under the client\'s Content-Type and Content-Length', async (t) => {
  const json = Buffer.from(JSON.stringify({ name: 'Ada', note: 'ü'.repeat(50) }))
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const received = await forward(t, method, json, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(json.length) })
    t.equal(received.method, method)
    t.equal(received.headers['content-type'], 'application/json; charset=utf-8', 'parameters kept (reply-from would re-encode a parsed JSON body)')
    t.equal(received.headers['content-length'], String(json.length))
    t.equal(received.headers['transfer-encoding'], undefined, 'sent with a length, not chunked')
  }
  // A multipart body depends on its boundary parameter; binary bytes must not be re-encoded.
  const boundary = 'x-boundary-42'
  const multipart = Buffer.concat([
    Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="f"; filename="a.bin"\r\ncontent-type: application/octet-stream\r\n\r\n`),
    Buffer.from([0, 255, 128, 10, 13, 0, 1]),
    Buffer.from(`\r\n--${boundary}--\r\n`)
  ])
  const received = await forward(t, 'POST', multipart, { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(multipart.length) })
  t.equal(received.headers['content-type'], `multipart/form-data; boundary=${boundary}`)
})

t.test('read whole up to the threshold, streamed just above it — both arrive whole', async (t) => {
  for (const size of [WHOLE_BODY_MAX_BYTES, WHOLE_BODY_MAX_BYTES + 1, 10 * WHOLE_BODY_MAX_BYTES]) {
    const body = Buffer.alloc(size, 'b')
    const received = await forward(t, 'POST', body, { 'content-type': 'application/octet-stream', 'content-length': String(size) })
    t.equal(received.headers['content-length'], String(size))
  }
})

t.test('an untyped body is streamed as it is: no Content-Type is invented for it', async (t) => {
  const body = Buffer.from('plain bytes, no type')
  const received = await forward(t, 'POST', body, { 'content-length': String(body.length) })
  t.equal(received.headers['content-type'], undefined)
})

t.test('an empty POST stays empty', async (t) => {
  const received = await forward(t, 'POST', Buffer.alloc(0), { 'content-type': 'application/json', 'content-length': '0' })
  t.equal(received.headers['content-length'], '0')
})

t.test('a client that stops halfway through a small body: nothing reaches the upstream, not even an aborted request', async (t) => {
  const since = upstream.requests.length
  const logsBefore = logs.length
  await new Promise<void>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write('POST /files/upload HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"half":')
      // Long enough for the gateway to have read the head and the first bytes, then gone.
      setTimeout(() => { socket.destroy(); resolve() }, 100)
    })
    socket.on('error', reject)
  })
  // The proxy refuses the incomplete body (a client error, logged at debug) once Node has noticed the close.
  const refused = (): boolean => logs.slice(logsBefore).some((line) => line.includes('"code":"FST_ERR_CTP_INVALID_CONTENT_LENGTH"') && line.includes('"msg":"request refused"'))
  const deadline = Date.now() + 2_000
  while (!refused() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(refused(), 'the incomplete body was refused as the client\'s error')
  t.notOk(logs.slice(logsBefore).some((line) => line.includes('"level":50')), 'no error was logged for a client that left')
  await assertOnlyCanary(t, { port, label: 'half a body', since })
})

t.test('over HTTP/2: a small body arrives whole; a stream reset halfway through one reaches nothing', async (t) => {
  const h2App = Fastify({ http2: true })
  await h2App.register(gateway, { auth: false, services: { files: { upstream: upstream.url, prefix: '/files', rewritePrefix: '/files' } } })
  await h2App.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => h2App.close())
  const session = connectH2(`http://127.0.0.1:${(h2App.server.address() as { port: number }).port}`)
  t.teardown(() => { session.close() })
  /** One h2 request; `cut` resets the stream after the first bytes instead of ending it. Bounded by 5 s. */
  const send = async (path: string, body: Buffer, headers: Record<string, string>, cut = false): Promise<number> => await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`${path}: no answer within 5 s`)) }, 5_000)
    const stream = session.request({ ':method': 'POST', ':path': path, ...headers })
    stream.on('response', (head) => { clearTimeout(timer); resolve(Number(head[':status'])); stream.resume() })
    stream.on('error', () => {})
    stream.on('close', () => { clearTimeout(timer); resolve(0) })
    if (cut) {
      stream.write(body.subarray(0, 10))
      setTimeout(() => { stream.close(h2.NGHTTP2_CANCEL) }, 100)
    } else {
      stream.end(body)
    }
  })

  const json = Buffer.from(JSON.stringify({ over: 'h2', pad: 'x'.repeat(500) }))
  const before = upstream.requests.length
  t.equal(await send('/files/h2', json, { 'content-type': 'application/json', 'content-length': String(json.length) }), 200)
  t.equal(upstream.requests.length, before + 1)
  t.ok(upstream.requests[before].body.equals(json), 'the upstream got the same bytes')
  t.equal(upstream.requests[before].headers['content-type'], 'application/json')

  const since = upstream.requests.length
  await send('/files/h2-cut', json, { 'content-type': 'application/json', 'content-length': String(json.length) }, true)
  t.equal(await send('/files/h2-canary', Buffer.from('{}'), { 'content-type': 'application/json', 'content-length': '2' }), 200, 'the gateway still answers')
  await upstream.waitForRequests(since + 1)
  t.same(upstream.requests.slice(since).map((request) => request.url), ['/files/h2-canary'], 'only the canary reached the upstream, not even an aborted request')
})
