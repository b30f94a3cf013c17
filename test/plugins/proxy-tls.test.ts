// Upstream TLS is verified by default (reply-from's own default does not verify).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:https'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { buildTestGateway } from '../helpers/gateway.js'

const fixtures = new URL('../fixtures/tls/', import.meta.url)
const cert = readFileSync(new URL('upstream-cert.pem', fixtures))
const key = readFileSync(new URL('upstream-key.pem', fixtures))

let hits = 0
const server = createServer({ cert, key }, (_req, res) => {
  hits++
  res.end('secret from a self-signed upstream')
})
server.listen(0, '127.0.0.1')
await once(server, 'listening')
const upstream = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
t.teardown(() => { server.close() })

t.test('a self-signed HTTPS upstream → 502 without its CA', async (t) => {
  const { app } = await buildTestGateway({ services: { s: { upstream, prefix: '/s' } } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/s/x' })
  t.equal(response.statusCode, 502)
  t.equal(response.json().code, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
  t.notMatch(response.body, 'secret')
  t.equal(hits, 0, 'no request was sent over the unverified connection')
})

t.test('the same upstream → 200 with its CA configured', async (t) => {
  const { app } = await buildTestGateway({ services: { s: { upstream, prefix: '/s', ca: cert.toString() } } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/s/x' })
  t.equal(response.statusCode, 200)
  t.equal(response.body, 'secret from a self-signed upstream')
  t.equal(hits, 1)
})
