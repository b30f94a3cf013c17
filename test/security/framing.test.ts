// SECURITY.md § B (framing): ambiguous message framing is refused by Node's parser — 400, the
// connection closed, nothing forwarded. Node rejects these today; the rows are regression guards
// (and fail loudly if anyone ever turns on insecureHTTPParser). Raw bytes over node:net.
import t from 'tap'
import { once } from 'node:events'
import { connect } from 'node:net'
import { gatewayServerOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawExchange, rawGet, rawRequest } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'

const upstream = await createTestUpstream()
const evil = await createEvilListener()
const { app } = await buildTestGateway({
  services: { open: { upstream: upstream.url, prefix: '/public', rewritePrefix: '/public' } }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
  await evil.close()
})

const assertOnlyCanary = createCanary(upstream, '/public')

const CRLF = '\r\n'
/** A request head from lines, with CRLF line ends (cases that need other line ends spell them out). */
const head = (...lines: string[]): string => lines.join(CRLF) + CRLF + CRLF
// What a smuggling attempt hides in the body: a second request that must never reach the upstream.
const SMUGGLED = `GET /public/smuggled HTTP/1.1${CRLF}Host: 127.0.0.1${CRLF}${CRLF}`
const POST = 'POST /public/x HTTP/1.1'
const HOST = 'Host: 127.0.0.1'

// The code is Node's own plain 400 (no problem document) where null; see the missing-Host row.
const refused: Array<[string, string, string | null, 'head' | 'body']> = [
  // [case, bytes sent, code, where the framing breaks]
  ['CL + TE: chunked', head(POST, HOST, 'Content-Length: 6', 'Transfer-Encoding: chunked') + `0${CRLF}${CRLF}${SMUGGLED}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['TE: chunked + CL (reversed order)', head(POST, HOST, 'Transfer-Encoding: chunked', 'Content-Length: 6') + `0${CRLF}${CRLF}${SMUGGLED}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['CL + TE: identity', head(POST, HOST, 'Content-Length: 5', 'Transfer-Encoding: identity') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['two Content-Length, different values', head(POST, HOST, 'Content-Length: 5', 'Content-Length: 45') + 'hello' + SMUGGLED, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['two Content-Length, same value', head(POST, HOST, 'Content-Length: 5', 'Content-Length: 5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length as a list', head(POST, HOST, 'Content-Length: 5, 5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length with a sign', head(POST, HOST, 'Content-Length: +5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length negative', head(POST, HOST, 'Content-Length: -1') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length in hex', head(POST, HOST, 'Content-Length: 0x5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length with an inner space', head(POST, HOST, 'Content-Length: 1 5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length with trailing letters', head(POST, HOST, 'Content-Length: 5abc') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length with a space before the colon', head(POST, HOST, 'Content-Length : 5') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Content-Length overflowing 64 bits', head(POST, HOST, 'Content-Length: 99999999999999999999') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding: xchunked', head(POST, HOST, 'Transfer-Encoding: xchunked') + `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding: chunked, identity (chunked not last)', head(POST, HOST, 'Transfer-Encoding: chunked, identity') + `0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding: identity alone', head(POST, HOST, 'Transfer-Encoding: identity') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding: gzip alone', head(POST, HOST, 'Transfer-Encoding: gzip') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['two Transfer-Encoding, chunked then identity', head(POST, HOST, 'Transfer-Encoding: chunked', 'Transfer-Encoding: identity') + `0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding with a space before the colon', head(POST, HOST, 'Transfer-Encoding : chunked') + `0${CRLF}${CRLF}${SMUGGLED}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding after a vertical tab', head(POST, HOST, 'Transfer-Encoding:\x0bchunked') + `0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['Transfer-Encoding with a NUL', head(POST, HOST, 'Transfer-Encoding: chunked\x00') + `0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['obs-fold in an ordinary header', head('GET /public/x HTTP/1.1', HOST, 'X-Folded: a', ' b'), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['obs-fold continuing Transfer-Encoding', head(POST, HOST, 'Transfer-Encoding:', ' chunked', 'Content-Length: 6') + `0${CRLF}${CRLF}${SMUGGLED}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['obs-fold with a tab, continuing Content-Length', head(POST, HOST, 'Content-Length: 5', '\t0') + 'hello', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['bare LF line endings throughout', 'GET /public/x HTTP/1.1\nHost: 127.0.0.1\n\n', 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['bare LF after the request line', `GET /public/x HTTP/1.1\n${HOST}${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['bare LF ending the head', `GET /public/x HTTP/1.1${CRLF}${HOST}\n\n`, 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['bare CR inside a header value', head('GET /public/x HTTP/1.1', HOST, 'X-Split: a\rTransfer-Encoding: chunked'), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['NUL in a header value', head('GET /public/x HTTP/1.1', HOST, 'X-Nul: a\x00b'), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['space in a header name', head('GET /public/x HTTP/1.1', HOST, 'Transfer Encoding: chunked'), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['header line without a colon', head('GET /public/x HTTP/1.1', HOST, 'no-colon-here'), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['invalid chunk size', head(POST, HOST, 'Transfer-Encoding: chunked') + `zz${CRLF}hello${CRLF}0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'body'],
  ['chunk size overflowing 64 bits', head(POST, HOST, 'Transfer-Encoding: chunked') + `FFFFFFFFFFFFFFFFFF${CRLF}hello${CRLF}0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'body'],
  ['chunk data longer than its size', head(POST, HOST, 'Transfer-Encoding: chunked') + `3${CRLF}hello${CRLF}0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'body'],
  ['bare LF in chunk framing', head(POST, HOST, 'Transfer-Encoding: chunked') + '5\nhello\n0\n\n', 'GATEWAY_ERR_BAD_REQUEST', 'body'],
  ['chunk extension with a bare LF', head(POST, HOST, 'Transfer-Encoding: chunked') + `5;x\nhello${CRLF}0${CRLF}${CRLF}`, 'GATEWAY_ERR_BAD_REQUEST', 'body'],
  ['HTTP/1.1 without Host', head('GET /public/x HTTP/1.1', 'X-Any: 1'), null, 'head'],
  ['unknown HTTP version', head('GET /public/x HTTP/9.9', HOST), 'GATEWAY_ERR_BAD_REQUEST', 'head'],
  ['lower-case method', head('get /public/x HTTP/1.1', HOST), 'GATEWAY_ERR_BAD_REQUEST', 'head']
]

for (const [label, bytes, code, where] of refused) {
  t.test(`refused: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawExchange(port, bytes)
    t.equal(response.status, 400, 'status')
    if (code === null) t.equal(response.headers['content-type'], undefined, 'Node\'s own 400, before Fastify')
    else t.equal(JSON.parse(response.body).code, code, 'code')
    t.equal(response.closedByServer, true, 'the gateway closed the connection')
    t.notMatch(response.raw, /HTTP\/1\.1 [^4]\d\d/, 'no other response on that connection')
    await assertOnlyCanary(t, { port, label, since: before, streamed: where === 'body' })
  })
}

t.test('a malformed request after a served one on the same connection: refused, the connection closed', async (t) => {
  const before = upstream.requests.length
  const socket = connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const received: Buffer[] = []
  socket.on('data', (chunk: Buffer) => received.push(chunk))
  const closed = once(socket, 'close')
  socket.write(rawGet('/public/first').replace('Connection: close\r\n', ''))
  // The first response is complete once its final chunk (or its length) has arrived.
  await upstream.waitForRequests(before + 1)
  while (!/0\r\n\r\n$|"url":"\/public\/first"\}$/.test(Buffer.concat(received).toString('latin1'))) await once(socket, 'data')
  socket.write(head(POST, HOST, 'Content-Length: 5', 'Transfer-Encoding: chunked') + `0${CRLF}${CRLF}${SMUGGLED}`)
  await closed
  const text = Buffer.concat(received).toString('latin1')
  t.match(text, /^HTTP\/1\.1 200 /, 'the valid request was served')
  t.match(text, /\r\nHTTP\/1\.1 400 [^]*"code":"GATEWAY_ERR_BAD_REQUEST"/, 'the malformed one refused')
  t.equal(upstream.requests[before].url, '/public/first')
  await assertOnlyCanary(t, { port, label: 'second request on the connection', since: before + 1 })
})

t.test('controls: well-framed bodies pass whole, chunked or with a length', async (t) => {
  const cases: Array<[string, string]> = [
    ['Content-Length', head(POST, HOST, 'Connection: close', 'Content-Length: 5') + 'hello'],
    ['chunked', head(POST, HOST, 'Connection: close', 'Transfer-Encoding: chunked') + `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    ['chunked, any case', head(POST, HOST, 'Connection: close', 'Transfer-Encoding: Chunked') + `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`]
  ]
  for (const [label, bytes] of cases) {
    const response = await rawRequest(port, bytes)
    t.equal(response.status, 200, label)
    const received = upstream.requests.at(-1)
    t.equal(received?.body.toString(), 'hello', `${label}: the upstream got the whole body`)
    t.equal(received?.aborted, false, label)
  }
})

t.test('the lenient parser is never enabled', async (t) => {
  t.notOk((gatewayServerOptions().http as Record<string, unknown>).insecureHTTPParser, 'not in gatewayServerOptions()')
  t.notOk((app.initialConfig as Record<string, unknown>).insecureHTTPParser, 'off in the gateway under test')
})

t.test('at the end: the evil listener saw no connection; the smuggled request never arrived', async (t) => {
  t.equal(evil.connections, 0)
  t.notOk(upstream.requests.some((request) => request.url === '/public/smuggled'))
})
