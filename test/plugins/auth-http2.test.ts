// Auth over HTTP/2 (Fastify's `http2: true`), with a real h2 client: an Http2ServerRequest's
// `headers` cannot be replaced like an HTTP/1 request's, so the credential is removed in place.
import t from 'tap'
import { connect } from 'node:http2'
import Fastify from 'fastify'
import { gateway } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())
const app = Fastify({ http2: true })
await app.register(gateway, {
  auth: { jwt: { secret: SECRET, audience: 'api' }, public: ['GET /health'] },
  services: { users: { upstream: upstream.url, prefix: '/users' } }
})
app.get('/health', async (request) => ({ authorization: request.headers.authorization ?? null }))
await app.listen({ port: 0, host: '127.0.0.1' })
t.teardown(() => app.close())
const { port } = app.server.address() as { port: number }

/** One h2 request, bounded by 5 s. */
async function get (path: string, headers: Record<string, string> = {}): Promise<{ status: number, body: string }> {
  const session = connect(`http://127.0.0.1:${port}`)
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`${path}: no answer within 5 s`)) }, 5_000)
      const stream = session.request({ ':path': path, ...headers })
      let status = 0
      let body = ''
      stream.on('response', (head) => { status = Number(head[':status']) })
      stream.setEncoding('utf8')
      stream.on('data', (chunk: string) => { body += chunk })
      stream.on('end', () => { clearTimeout(timer); resolve({ status, body }) })
      stream.on('error', (error) => { clearTimeout(timer); reject(error) })
    })
  } finally {
    session.close()
  }
}

t.test('a valid token over HTTP/2: 200, and the upstream gets the identity, not the token', async (t) => {
  const before = upstream.requests.length
  const response = await get('/users/1', { authorization: `Bearer ${hs256({ sub: 'h2-user' })}` })
  t.equal(response.status, 200)
  t.equal(upstream.requests.length, before + 1)
  const seen = upstream.requests.at(-1)
  t.equal(seen?.headers.authorization, undefined, 'the credential is not forwarded')
  t.equal(seen?.headers['x-consumer-id'], 'h2-user')
})

t.test('a public route over HTTP/2: a credential sent anyway is removed before the handler', async (t) => {
  const response = await get('/health', { authorization: 'Bearer not-checked' })
  t.equal(response.status, 200)
  t.same(JSON.parse(response.body), { authorization: null })
})

t.test('no credential over HTTP/2: 401 problem', async (t) => {
  const response = await get('/users/1')
  t.equal(response.status, 401)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_UNAUTHENTICATED')
})
