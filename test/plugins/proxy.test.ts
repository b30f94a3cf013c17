// What the upstream receives: path, query, headers, body — and what the client gets back.
import t from 'tap'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { rawRequest } from '../helpers/raw-http.js'

const upstream = await createTestUpstream()
const second = await createTestUpstream()
const { app } = await buildTestGateway({
  services: {
    users: { upstream: upstream.url, prefix: '/api/v1/users' },
    legacy: { upstream: `${upstream.url}/v2/`, prefix: '/legacy', rewritePrefix: '/accounts', methods: ['GET'] },
    orders: { upstream: [upstream.url, second.url], prefix: '/api/v1/orders' }
  }
}, { trustProxy: ['10.0.0.0/8'] })
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await second.close()
})

function raw (lines: string[], body = ''): string {
  return [...lines, '', body].join('\r\n')
}

t.test('the prefix is replaced by rewritePrefix and the query is kept verbatim', async (t) => {
  const cases: Array<[string, string]> = [
    ['/api/v1/users/42?fields=a,b&x=%20', '/42?fields=a,b&x=%20'],
    ['/api/v1/users', '/'],
    ['/api/v1/users/', '/'],
    ['/legacy/7', '/v2/accounts/7'],
    ['/legacy', '/v2/accounts']
  ]
  for (const [sent, received] of cases) {
    const response = await app.inject({ url: sent })
    t.equal(response.statusCode, 200, sent)
    t.equal(upstream.requests.at(-1)?.url, received, `${sent} → ${received}`)
  }
})

t.test('methods not configured for a service are not routed', async (t) => {
  const before = upstream.requests.length
  const response = await app.inject({ method: 'DELETE', url: '/legacy/7' })
  t.equal(response.statusCode, 404)
  t.equal(upstream.requests.length, before)
})

t.test('several targets are used round-robin', async (t) => {
  const [a, b] = [upstream.requests.length, second.requests.length]
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: `/api/v1/orders/${i}` })).statusCode, 200)
  t.equal(upstream.requests.length - a, 3)
  t.equal(second.requests.length - b, 3)
})

t.test('client-sent identity headers never reach the upstream, in any spelling', async (t) => {
  const response = await rawRequest(port, raw([
    'GET /api/v1/users/me HTTP/1.1', 'Host: gw', 'Connection: close',
    'x-consumer-id: forged-1', 'X-Consumer-Id: forged-2', 'X-CONSUMER-ID: forged-3', 'x_consumer_id: forged-4',
    'x-consumer_scopes: admin', 'X_Consumer-Scopes: admin'
  ]))
  t.equal(response.status, 200)
  const received = upstream.requests.at(-1)
  t.notMatch(received?.rawHeaders.join('\n').toLowerCase(), /consumer/, `received: ${received?.rawHeaders.join(', ')}`)
})

t.test('Connection: close, x-request-id does not remove the id the gateway sets', async (t) => {
  const response = await rawRequest(port, raw([
    'GET /api/v1/users/1 HTTP/1.1', 'Host: gw', 'x-request-id: client-id-1', 'Connection: close, x-request-id, x-forwarded-for'
  ]))
  t.equal(response.status, 200)
  const received = upstream.requests.at(-1)
  t.equal(received?.headers['x-request-id'], response.headers['x-request-id'], 'the upstream has the id of the reply')
  t.type(received?.headers['x-request-id'], 'string')
  t.equal(received?.headers['x-forwarded-for'], '127.0.0.1', 'the gateway still sets forwarding headers')
})

t.test('hop-by-hop headers and headers named in Connection are not forwarded', async (t) => {
  const response = await rawRequest(port, raw([
    'GET /api/v1/users/1 HTTP/1.1', 'Host: gw', 'Connection: close, x-secret-hop', 'x-secret-hop: 1',
    'Keep-Alive: timeout=5', 'Proxy-Authorization: Basic Zm9vOmJhcg==', 'TE: trailers', 'Trailer: x-t', 'Upgrade: websocket',
    'Proxy-Connection: keep-alive', 'x-kept: yes'
  ]))
  t.equal(response.status, 200)
  const received = upstream.requests.at(-1)?.headers ?? {}
  for (const name of ['x-secret-hop', 'keep-alive', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'proxy-connection']) {
    t.equal(received[name], undefined, `${name} not forwarded`)
  }
  t.equal(received['x-kept'], 'yes', 'end-to-end headers are forwarded')
})

t.test('hop-by-hop headers of the upstream response are not passed back', async (t) => {
  upstream.failNext(1, { status: 200, headers: { connection: 'x-up-hop', 'x-up-hop': '1', 'keep-alive': 'timeout=99', 'x-up-kept': 'yes' }, body: 'ok' })
  const response = await app.inject({ url: '/api/v1/users/1' })
  t.equal(response.headers['x-up-hop'], undefined)
  t.equal(response.headers['keep-alive'], undefined)
  t.equal(response.headers['x-up-kept'], 'yes')
  t.equal(response.body, 'ok')
})

t.test('forwarding headers from an untrusted peer are replaced, not trusted', async (t) => {
  await app.inject({
    url: '/api/v1/users/1',
    remoteAddress: '203.0.113.9',
    headers: {
      'x-forwarded-for': '1.2.3.4',
      'x-forwarded-host': 'evil.example',
      'x-forwarded-proto': 'https',
      forwarded: 'for=1.2.3.4',
      'x-real-ip': '1.2.3.4',
      'x-forwarded-prefix': '/evil',
      host: 'gw.example'
    }
  })
  const received = upstream.requests.at(-1)?.headers ?? {}
  t.equal(received['x-forwarded-for'], '203.0.113.9')
  t.equal(received['x-forwarded-host'], 'gw.example')
  t.equal(received['x-forwarded-proto'], 'http')
  t.equal(received.forwarded, undefined)
  t.equal(received['x-real-ip'], undefined)
  t.equal(received['x-forwarded-prefix'], undefined)
  t.equal(received.host, `127.0.0.1:${upstream.port}`, 'host is the upstream')
})

t.test('behind a trusted proxy the right-most untrusted hop is the client', async (t) => {
  await app.inject({
    url: '/api/v1/users/1',
    remoteAddress: '10.0.0.5',
    headers: { 'x-forwarded-for': '1.2.3.4, 198.51.100.7, 10.0.0.9', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example' }
  })
  const received = upstream.requests.at(-1)?.headers ?? {}
  t.equal(received['x-forwarded-for'], '198.51.100.7')
  t.equal(received['x-forwarded-proto'], 'https')
  t.equal(received['x-forwarded-host'], 'api.example')
})

t.test('request bodies are streamed through unparsed, byte for byte', async (t) => {
  const body = JSON.stringify({ name: 'Ada', nested: { ok: true } })
  const response = await app.inject({ method: 'POST', url: '/api/v1/users', payload: body, headers: { 'content-type': 'application/json' } })
  t.equal(response.statusCode, 200)
  const received = upstream.requests.at(-1)
  t.equal(received?.body.toString(), body)
  t.equal(received?.headers['content-type'], 'application/json')
  const binary = Buffer.from([0, 1, 2, 250, 255])
  await app.inject({ method: 'PUT', url: '/api/v1/users/1', payload: binary, headers: { 'content-type': 'application/x-custom' } })
  t.same(upstream.requests.at(-1)?.body, binary, 'unknown content types pass too')
  const untyped = await rawRequest(port, raw(['POST /api/v1/users HTTP/1.1', 'Host: gw', 'Connection: close', 'Content-Length: 7'], 'no type'))
  t.equal(untyped.status, 200)
  t.equal(upstream.requests.at(-1)?.body.toString(), 'no type', 'and bodies without a content type')
})

t.test('responses are streamed back with their status, headers and body', async (t) => {
  const big = Buffer.alloc(256 * 1024, 'z')
  upstream.failNext(1, { status: 201, headers: { 'content-type': 'application/octet-stream', 'set-cookie': ['a=1', 'b=2'] }, body: big })
  const response = await app.inject({ url: '/api/v1/users/big' })
  t.equal(response.statusCode, 201)
  t.equal(response.rawPayload.length, big.length)
  t.same(response.headers['set-cookie'], ['a=1', 'b=2'])
})

t.test('a redirect into the upstream itself is mapped back under the service prefix', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['/legacy/1', `${upstream.url}/v2/accounts/2?x=1`, '/legacy/2?x=1'],
    ['/legacy/1', '/v2/accounts', '/legacy'],
    ['/api/v1/users/1', `${upstream.url}/login`, '/api/v1/users/login'],
    ['/api/v1/users/1', 'https://id.example.com/authorize', 'https://id.example.com/authorize'],
    ['/legacy/1', '/v2/accountsx', '/v2/accountsx']
  ]
  for (const [url, location, expected] of cases) {
    upstream.failNext(1, { status: 302, headers: { location } })
    const response = await app.inject({ url })
    t.equal(response.headers.location, expected, `${location} → ${expected}`)
  }
})
