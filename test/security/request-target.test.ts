// SECURITY.md § A (request target vs policy) and § C (open proxy, SSRF): raw targets over node:net,
// because undici, `new URL` and light-my-request normalise the very bytes under test.
import t from 'tap'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawGet, rawRequest } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'

const upstream = await createTestUpstream()
const evil = await createEvilListener()
const { app } = await buildTestGateway({
  services: {
    // rewritePrefix keeps the prefix, so the upstream's recorded path shows which service was used
    open: { upstream: upstream.url, prefix: '/public', rewritePrefix: '/public' },
    admin: { upstream: upstream.url, prefix: '/admin', rewritePrefix: '/admin' }
  }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await evil.close()
})

const assertOnlyCanary = createCanary(upstream, '/public')

const E = () => `127.0.0.1:${evil.port}`
const refusedTargets: Array<[string, () => string, number, string]> = [
  // [case, target, status, code]
  ['dot-dot', () => '/public/../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['dot then dot-dot', () => '/public/./../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['single dot', () => '/public/./x', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['trailing dot-dot', () => '/public/..', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded dot-dot', () => '/public/%2e%2e/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['half-encoded dot-dot', () => '/public/.%2e/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['upper-case encoded dot-dot', () => '/public/%2E%2E/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['double-encoded dot-dot', () => '/public/%252e%252e/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['backslash dot-dot', () => '/public\\..\\admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded backslash dot-dot', () => '/public%5c..%5cadmin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded slash', () => '/public/x%2f..%2f..%2fadmin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded slash upper', () => '/public%2Fadmin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded NUL', () => '/public/x%00.json', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded semicolon', () => '/public/x%3b/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded hash', () => '/public/x%23/../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded unreserved letter', () => '/p%75blic/x', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['encoded tilde', () => '/public/%7Euser', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['matrix parameter then dot-dot', () => '/public;x=1/../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['dot-dot-semicolon', () => '/public/..;/admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['raw semicolon', () => '/public;jsessionid=1', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['fragment', () => '/public/x#/../../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['fragment in query', () => '/public/x?a=1#frag', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['double slash', () => '//admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['double slash inside', () => '/public//../admin', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['malformed percent', () => '/public/%zz', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['truncated percent', () => '/public/%2', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  // Node's parser refuses these before Fastify: answered by gatewayServerOptions' clientErrorHandler.
  ['non-ASCII byte', () => '/public/\u00e9', 400, 'GATEWAY_ERR_BAD_REQUEST'],
  ['asterisk form', () => '*', 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  // § C: absolute-form and authority tricks must never open a connection to E.
  ['absolute form', () => `http://${E()}/x`, 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['absolute form https', () => `https://${E()}/public/x`, 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['scheme-relative', () => `//${E()}/x`, 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['backslash authority', () => `/\\${E()}/x`, 400, 'GATEWAY_ERR_BAD_REQUEST_TARGET'],
  ['authority form on GET', () => E(), 400, 'GATEWAY_ERR_BAD_REQUEST'],
  // reply-from refuses any source containing "/.." (fastify-reply-from#460), so a segment that
  // merely starts with ".." cannot be proxied: 400, nothing forwarded (docs/proxy.md).
  ['segment starting with dot-dot', () => '/public/...', 400, 'GATEWAY_ERR_BAD_REQUEST']
]

for (const [label, target, status, code] of refusedTargets) {
  t.test(`refused: ${label}`, async (t) => {
    const since = upstream.requests.length
    const response = await rawRequest(port, rawGet(target()))
    t.equal(response.status, status, 'status')
    t.match(response.headers['content-type'], /^application\/problem\+json/)
    const body = JSON.parse(response.body)
    t.equal(body.code, code, 'code')
    t.type(body.requestId, 'string', 'request id in the body')
    await assertOnlyCanary(t, { port, label, since })
  })
}

t.test('CONNECT is refused with 405 and never tunnelled', async (t) => {
  const since = upstream.requests.length
  const response = await rawRequest(port, `CONNECT ${E()} HTTP/1.1\r\nHost: ${E()}\r\n\r\n`)
  t.equal(response.status, 405)
  t.match(response.headers.allow, /GET/, 'a 405 lists the allowed methods')
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_METHOD_NOT_ALLOWED')
  await assertOnlyCanary(t, { port, label: 'CONNECT', since })
})

// TRACK is not a method Node's parser knows: refused there with 400.
for (const [method, status, code] of [['TRACE', 405, 'GATEWAY_ERR_METHOD_NOT_ALLOWED'], ['TRACK', 400, 'GATEWAY_ERR_BAD_REQUEST']] as const) {
  t.test(`${method} is refused and never echoed`, async (t) => {
    const since = upstream.requests.length
    const response = await rawRequest(port, rawGet('/public/x', ['Authorization: Bearer secret-token'], method))
    t.equal(response.status, status)
    t.equal(JSON.parse(response.body).code, code)
    if (status === 405) t.match(response.headers.allow, /GET/, 'a 405 lists the allowed methods')
    t.notMatch(response.body, 'secret-token')
    await assertOnlyCanary(t, { port, label: method, since })
  })
}

t.test('control bytes are refused by the parser, with a problem document', async (t) => {
  const since = upstream.requests.length
  const response = await rawRequest(port, 'GET /public/x\u0001y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  t.equal(response.status, 400)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_BAD_REQUEST')
  await assertOnlyCanary(t, { port, label: 'control byte', since })
})

t.test('prefix boundaries: /public does not open /publicity or /public-admin', async (t) => {
  for (const target of ['/publicity', '/public-admin', '/publicx/y']) {
    const since = upstream.requests.length
    const response = await rawRequest(port, rawGet(target))
    t.equal(response.status, 404, target)
    await assertOnlyCanary(t, { port, label: target, since })
  }
})

t.test('the query never takes part in the path decision and is forwarded verbatim', async (t) => {
  const response = await rawRequest(port, rawGet('/public?x=/../../admin&y=%2e%2e'))
  t.equal(response.status, 200)
  t.equal(upstream.requests.at(-1)?.url, '/public?x=/../../admin&y=%2e%2e')
})

t.test('canonical paths pass through byte for byte', async (t) => {
  for (const target of ['/public/a%20b/%C3%A9t%C3%A9', "/public/a-b_c.d~e!$&'()*+,=:@", '/public/.well-known/x', '/public/a..b', '/public/x.']) {
    const response = await rawRequest(port, rawGet(target))
    t.equal(response.status, 200, target)
    t.equal(upstream.requests.at(-1)?.url, target, `upstream received ${target}`)
  }
})

t.test('at the end: the evil listener saw no connection, the upstream only exposed paths', async (t) => {
  t.equal(evil.connections, 0)
  for (const request of upstream.requests) t.match(request.url, /^\/public(?:[/?]|$)/, request.url)
})
