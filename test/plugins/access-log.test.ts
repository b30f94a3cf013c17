// Access log and redaction (issue 6, SECURITY.md § K): one structured line per request, and no
// credential — Authorization, Cookie, API key header or query parameter — in any log line.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { request } from 'undici'
import { gateway, gatewayServerOptions, type GatewayOptions } from '../../lib/index.js'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'
import { listen } from '../helpers/gateway.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const API_KEY = 'api-key-value-7f3a9c2e1b'
const QUERY_KEY = 'query-key-value-5d8e2a4f6c'
const COOKIE = 'session-cookie-value-9b1c3e'

interface Built { app: FastifyInstance, lines: () => Array<Record<string, unknown>>, text: () => string }

async function build (t: Test, upstream: TestUpstream, serverOptions: (stream: { write: (line: string) => void }) => FastifyServerOptions, options: Partial<GatewayOptions> = {}): Promise<Built> {
  const raw: string[] = []
  const app = Fastify(serverOptions({ write: (line) => { raw.push(line) } }))
  // A host hook that logs what it sees, before the gateway has removed anything.
  app.addHook('onRequest', async (request) => {
    request.log.info({ headers: request.headers }, 'host: headers')
    request.log.info({ req: request }, 'host: request')
  })
  await app.register(gateway, {
    auth: {
      jwt: { secret: SECRET, audience: 'api' },
      apiKeys: { query: 'key_param', lookup: async (key) => [API_KEY, QUERY_KEY].includes(key) ? { id: 'svc' } : null }
    },
    services: { users: { upstream: upstream.url, prefix: '/users' } },
    ...options
  } as GatewayOptions)
  t.teardown(async () => { await app.close() })
  return { app, lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>), text: () => raw.join('') }
}

const secretHeaders = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}`, cookie: `session=${COOKIE}`, 'x-api-key': API_KEY })

t.test('one access line per request, with what an operator needs and nothing else', async (t) => {
  const upstream = await createTestUpstream()
  t.teardown(async () => { await upstream.close() })
  const { app, lines } = await build(t, upstream, (stream) => ({ ...gatewayServerOptions({ logger: { level: 'info', stream } }) }))
  const response = await app.inject({ url: '/users/42?page=2', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(response.statusCode, 200)
  const access = lines().filter((line) => line.msg === 'access')
  t.equal(access.length, 1)
  t.match(access[0], {
    reqId: response.headers['x-request-id'],
    method: 'GET',
    route: '/users/*',
    service: 'users',
    consumer: 'alice',
    status: 200,
    upstreamStatus: 200,
    upstreamMs: Number,
    durationMs: Number
  })
  t.notOk(lines().some((line) => line.msg === 'incoming request' || line.msg === 'request completed'), 'Fastify\'s own two lines are replaced')
  t.notMatch(JSON.stringify(access[0]), /\/users\/42|page=2/, 'no path or query in the access line')

  await app.inject({ url: '/nowhere' })
  t.match(lines().filter((line) => line.msg === 'access').at(-1), { route: 'unmatched', status: 404 })
  // Over a real connection, streamed (chunked) bodies are counted too: headers and body as sent.
  const port = await listen(app)
  const sizes: number[] = []
  for (let i = 0; i < 2; i++) {
    const { statusCode, headers, body } = await request(`http://127.0.0.1:${port}/users/${i}`, { headers: { authorization: `Bearer ${hs256()}` } })
    const text = await body.text()
    t.equal(statusCode, 200)
    t.equal(headers['transfer-encoding'], 'chunked')
    sizes.push(Buffer.byteLength(text))
  }
  const counted = lines().filter((line) => line.msg === 'access').slice(-2).map((line) => line.bytes as number)
  t.equal(counted.length, 2)
  counted.forEach((bytes, i) => { t.ok(bytes > sizes[i] + 100 && bytes < sizes[i] + 1000, `response ${i}: body plus headers (${bytes} bytes)`) })
})

t.test('no credential in any log line: recommended logger options', async (t) => {
  const upstream = await createTestUpstream()
  t.teardown(async () => { await upstream.close() })
  const token = hs256()
  const { app, text } = await build(t, upstream, (stream) => ({ ...gatewayServerOptions({ logger: { level: 'trace', stream } }) }))
  const proxied = await app.inject({ url: `/users/1?key_param=${QUERY_KEY}&api_key=${QUERY_KEY}`, headers: secretHeaders(token) })
  t.equal(proxied.statusCode, 200)
  const unknown = await app.inject({ url: `/nowhere?api_key=${QUERY_KEY}`, headers: secretHeaders(token) })
  t.equal(unknown.statusCode, 404)
  const refused = await app.inject({ url: `/users/1?key_param=${QUERY_KEY}x`, headers: { authorization: `Bearer ${token}x`, cookie: `session=${COOKIE}` } })
  t.equal(refused.statusCode, 401)
  const logged = text()
  t.match(logged, /host: headers/, 'the host\'s lines were written')
  for (const secret of [token, API_KEY, QUERY_KEY, COOKIE]) t.notMatch(logged, secret, 'value not logged')
  t.match(logged, /\[REDACTED\]/)
})

t.test('no credential in any log line: Fastify\'s default request logging, without the recommended options', async (t) => {
  const upstream = await createTestUpstream()
  t.teardown(async () => { await upstream.close() })
  const token = hs256()
  const { app, text } = await build(t, upstream, (stream) => ({ logger: { level: 'trace', stream } }))
  // The host's own header line is the host's business without the gateway's logger options; check
  // what the gateway and Fastify write on their own.
  const proxied = await app.inject({ url: `/users/1?key_param=${QUERY_KEY}`, headers: secretHeaders(token) })
  t.equal(proxied.statusCode, 200)
  const logged = text().split('\n').filter((line) => !line.includes('host: headers')).join('\n')
  t.match(logged, /incoming request/, 'Fastify\'s request line is still written')
  for (const secret of [token, API_KEY, QUERY_KEY, COOKIE]) t.notMatch(logged, secret, 'value not logged')
})

t.test('accessLog: false writes no access line; the level is configurable', async (t) => {
  const upstream = await createTestUpstream()
  t.teardown(async () => { await upstream.close() })
  const off = await build(t, upstream, (stream) => gatewayServerOptions({ logger: { level: 'trace', stream } }), { accessLog: false })
  await off.app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(off.lines().filter((line) => line.msg === 'access').length, 0)
  const debug = await build(t, upstream, (stream) => gatewayServerOptions({ logger: { level: 'info', stream } }), { accessLog: { level: 'debug' } })
  await debug.app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(debug.lines().filter((line) => line.msg === 'access').length, 0, 'debug lines are below the logger\'s level')
  const app = Fastify()
  await t.rejects(async () => { await app.register(gateway, { auth: false, accessLog: { level: 'loud' } } as never) }, { code: 'GATEWAY_ERR_INVALID_OPTION' })
  await app.close()
})
