// Request bodies over the limit: refused before forwarding when declared, aborted upstream when streamed.
import t from 'tap'
import { request as httpRequest } from 'node:http'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'

const LIMIT = 1024 * 1024
const upstream = await createTestUpstream()
const { app } = await buildTestGateway({
  services: { files: { upstream: upstream.url, prefix: '/files', bodyLimit: LIMIT } }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
})

/** Stream `total` bytes in chunks (chunked encoding unless a length is declared); stop once answered. */
async function upload (total: number, headers: Record<string, string> = {}): Promise<{ status: number | undefined, body: string, sent: number }> {
  return await new Promise((resolve) => {
    let sent = 0
    let answered = false
    const req = httpRequest({ port, host: '127.0.0.1', method: 'POST', path: '/files/upload', headers: { 'content-type': 'application/octet-stream', ...headers } })
    const timer = setTimeout(() => { req.destroy(); resolve({ status: undefined, body: '', sent }) }, 10_000)
    req.on('response', (res) => {
      answered = true
      let body = ''
      res.on('data', (chunk: Buffer) => { body += chunk.toString() })
      res.on('end', () => { clearTimeout(timer); resolve({ status: res.statusCode, body, sent }) })
    })
    req.on('error', () => { if (!answered) { clearTimeout(timer); resolve({ status: undefined, body: '', sent }) } })
    const chunk = Buffer.alloc(64 * 1024, 'a')
    const pump = (): void => {
      // `answered` flips in the response listener; the loop yields on every drain.
      // eslint-disable-next-line no-unmodified-loop-condition
      while (!answered && sent < total) {
        sent += chunk.length
        if (!req.write(chunk)) {
          req.once('drain', pump)
          return
        }
      }
      if (!answered) req.end()
    }
    pump()
  })
}

t.test('a 10 MiB chunked POST against a 1 MiB limit → 413, and the upstream sees an aborted request', async (t) => {
  const before = upstream.requests.length
  const response = await upload(10 * LIMIT)
  t.equal(response.status, 413)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_BODY_TOO_LARGE')
  t.ok(response.sent < 10 * LIMIT, `the client was stopped early (${response.sent} bytes sent)`)
  await upstream.waitForRequests(before + 1)
  const received = upstream.requests[before]
  t.equal(received.aborted, true, 'the upstream request was aborted, not completed')
  t.ok(received.body.length <= LIMIT, `the upstream never got more than the limit (${received.body.length} bytes)`)
})

t.test('a declared Content-Length over the limit → 413 before anything is forwarded', async (t) => {
  const before = upstream.requests.length
  const connections = upstream.connections
  const response = await upload(2 * LIMIT, { 'content-length': String(2 * LIMIT) })
  t.equal(response.status, 413)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_BODY_TOO_LARGE')
  const canary = await app.inject({ url: '/files/canary' })
  t.equal(canary.statusCode, 200)
  t.equal(upstream.requests.length, before + 1, 'only the canary reached the upstream')
  t.equal(upstream.connections - connections <= 1, true)
})

t.test('a body of exactly the limit passes whole, chunked or declared', async (t) => {
  for (const headers of [{}, { 'content-length': String(LIMIT) }] as Array<Record<string, string>>) {
    const response = await upload(LIMIT, headers)
    t.equal(response.status, 200)
    const received = upstream.requests.at(-1)
    t.equal(received?.aborted, false)
    t.equal(received?.body.length, LIMIT)
  }
})
