// Upstream responses on their way back: a typed body of a declared ≤ 16 KiB is read whole and sent
// as one buffer (lib/internal/upstream-body.ts), byte for byte under the upstream's headers;
// anything else is streamed. An `onSend` hook shows which path a response took.
import t, { type Test } from 'tap'
import { connect as connectH2 } from 'node:http2'
import Fastify, { type FastifyInstance } from 'fastify'
import { gateway, gatewayServerOptions } from '../../lib/index.js'
import { createTestUpstream, type UpstreamBehaviour } from '../../lib/testing/index.js'
import { WHOLE_BODY_MAX_BYTES } from '../../lib/internal/body-limit.js'
import { rawGet, rawRequest } from '../helpers/raw-http.js'
import { listen } from '../helpers/gateway.js'

const BODY_TIMEOUT_MS = 300
const upstream = await createTestUpstream()
const sent: string[] = []
const logs: string[] = []

async function gatewayWith (options: { http2?: true } = {}): Promise<FastifyInstance> {
  const logger = { level: 'debug', stream: { write: (line: string) => { logs.push(line) } } }
  const app = (options.http2 === true ? Fastify({ http2: true, logger }) : Fastify({ logger, ...gatewayServerOptions() })) as unknown as FastifyInstance
  // Registered before the gateway, so that its proxy routes inherit it.
  app.addHook('onSend', (_request, _reply, payload, done) => {
    sent.push(Buffer.isBuffer(payload) ? 'buffer' : typeof (payload as { pipe?: unknown })?.pipe === 'function' ? 'stream' : typeof payload)
    done()
  })
  await app.register(gateway, {
    auth: false,
    services: { files: { upstream: upstream.url, prefix: '/files', retries: 0, timeout: { headers: 1_000, body: BODY_TIMEOUT_MS } } }
  })
  return app
}

const app = await gatewayWith()
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
})

/** One GET through the gateway answered by `behaviour`; returns the response and how it was sent. */
async function through (behaviour: UpstreamBehaviour, method = 'GET') {
  upstream.failNext(1, behaviour)
  const before = sent.length
  const response = await app.inject({ method, url: '/files/x' })
  return { response, path: sent.slice(before).join(',') }
}

function assertSame (t: Test, response: { rawPayload: Buffer }, body: Buffer): void {
  t.ok(response.rawPayload.equals(body), `the client got the same ${body.length} bytes`)
}

t.test('a small typed response is sent as one buffer, byte for byte, under the upstream\'s headers', async (t) => {
  const body = Buffer.from([0, 255, 128, 10, 13, 0, 1, ...Buffer.from('ü'.repeat(40))])
  const { response, path } = await through({ status: 201, headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length), etag: '"v1"', 'x-upstream': 'kept' }, body })
  t.equal(path, 'buffer', 'read whole')
  t.equal(response.statusCode, 201)
  assertSame(t, response, body)
  t.equal(response.headers['content-type'], 'application/octet-stream')
  t.equal(response.headers['content-length'], String(body.length))
  t.equal(response.headers.etag, '"v1"')
  t.equal(response.headers['x-upstream'], 'kept')
  t.equal(response.headers['transfer-encoding'], undefined)
  t.match(response.headers['x-request-id'], /\S/, 'the gateway\'s own header is there too')
})

t.test('read whole up to the threshold, streamed just above it — both arrive whole', async (t) => {
  for (const [size, expected] of [[WHOLE_BODY_MAX_BYTES, 'buffer'], [WHOLE_BODY_MAX_BYTES + 1, 'stream'], [10 * WHOLE_BODY_MAX_BYTES, 'stream']] as const) {
    const body = Buffer.alloc(size, 'r')
    const { response, path } = await through({ headers: { 'content-type': 'text/plain', 'content-length': String(size) }, body })
    t.equal(path, expected, `${size} bytes: ${expected}`)
    t.equal(response.statusCode, 200)
    assertSame(t, response, body)
  }
})

t.test('untyped and chunked responses are streamed: no Content-Type invented, no length required', async (t) => {
  const untyped = await through({ headers: { 'content-length': '5' }, body: 'plain' })
  t.equal(untyped.path, 'stream')
  t.equal(untyped.response.body, 'plain')
  t.equal(untyped.response.headers['content-type'], undefined, 'Fastify would call a buffer application/octet-stream')
  const chunked = await through({ headers: { 'content-type': 'text/plain' }, body: 'chunked' })
  t.equal(chunked.path, 'stream')
  t.equal(chunked.response.body, 'chunked')
})

t.test('HEAD, 204 and 304 answers keep their framing: no body, no length invented', async (t) => {
  const head = await through({ headers: { 'content-type': 'text/plain', 'content-length': '42' } }, 'HEAD')
  t.equal(head.response.statusCode, 200)
  t.equal(head.response.headers['content-length'], '42', 'the length a GET would have')
  t.equal(head.response.body, '')
  const noContent = await through({ status: 204, headers: { 'content-type': 'text/plain' } })
  t.equal(noContent.response.statusCode, 204)
  t.equal(noContent.response.body, '')
  const notModified = await through({ status: 304, headers: { 'content-type': 'text/plain', etag: '"v1"' } })
  t.equal(notModified.response.statusCode, 304)
  t.equal(notModified.response.headers.etag, '"v1"')
  t.equal(notModified.response.body, '')
})

t.test('a client that leaves while a small body is awaited: nothing breaks, and the next request is served', async (t) => {
  upstream.failNext(1, 'stall-body')
  const response = await rawRequest(port, rawGet('/files/leaving'), { timeoutMs: 100 })
  t.equal(response.timedOut, true, 'the client gave up before the body timeout')
  // Outlive the body timeout: the read then fails with nobody to answer.
  await new Promise((resolve) => setTimeout(resolve, BODY_TIMEOUT_MS + 200))
  const next = await app.inject({ url: '/files/after' })
  t.equal(next.statusCode, 200)
  const errors = logs.filter((line) => JSON.parse(line).level >= 50)
  t.same(errors, [], 'no error logged')
})

t.test('over HTTP/2: a small response arrives whole, a large one streamed', async (t) => {
  const h2App = await gatewayWith({ http2: true })
  await h2App.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => h2App.close())
  const session = connectH2(`http://127.0.0.1:${(h2App.server.address() as { port: number }).port}`)
  t.teardown(() => { session.close() })
  const get = async (): Promise<{ status: number, body: Buffer }> => await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('no answer within 5 s')) }, 5_000)
    const stream = session.request({ ':method': 'GET', ':path': '/files/h2' })
    const chunks: Buffer[] = []
    let status = 0
    stream.on('response', (head) => { status = Number(head[':status']) })
    stream.on('data', (chunk: Buffer) => chunks.push(chunk))
    stream.on('end', () => { clearTimeout(timer); resolve({ status, body: Buffer.concat(chunks) }) })
    stream.on('error', reject)
    stream.end()
  })
  for (const [size, expected] of [[2_000, 'buffer'], [WHOLE_BODY_MAX_BYTES * 4, 'stream']] as const) {
    const body = Buffer.alloc(size, 'h')
    upstream.failNext(1, { headers: { 'content-type': 'text/plain', 'content-length': String(size) }, body })
    const before = sent.length
    const answer = await get()
    t.equal(answer.status, 200)
    t.ok(answer.body.equals(body), `${size} bytes arrived whole`)
    t.equal(sent.slice(before).join(','), expected)
  }
})
