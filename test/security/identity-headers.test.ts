// SECURITY.md § F: identity headers only the gateway sets. With auth on, the upstream sees exactly
// one x-consumer-id — the verified one — whatever the client sent, over raw sockets.
import t from 'tap'
import Fastify from 'fastify'
import { gateway, gatewayServerOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { listen } from '../helpers/gateway.js'
import { rawRequest } from '../helpers/raw-http.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
const app = Fastify({ ...gatewayServerOptions() })
await app.register(gateway, {
  auth: { jwt: { secret: SECRET, audience: 'api' }, identityHeaders: { claims: { tenant: 'x-tenant-id' } } },
  services: { api: { upstream: upstream.url, prefix: '/api' } }
})
const port = await listen(app)
t.teardown(async () => {
  await app.close()
  await upstream.close()
})

const token = hs256({ sub: 'alice', scope: 'read', tenant: 'acme' })
function request (extra: string[]): string {
  return ['GET /api/x HTTP/1.1', 'Host: gw', 'Connection: close', `Authorization: Bearer ${token}`, ...extra, '', ''].join('\r\n')
}
function valuesOf (rawHeaders: string[], name: string): string[] {
  const values: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase().replace(/_/g, '-') === name) values.push(rawHeaders[i + 1])
  return values
}

const spoofs: Array<[string, string[]]> = [
  ['lower case', ['x-consumer-id: mallory']],
  ['mixed case', ['X-Consumer-Id: mallory']],
  ['upper case', ['X-CONSUMER-ID: mallory']],
  ['duplicated', ['x-consumer-id: mallory', 'x-consumer-id: eve']],
  ['underscores', ['x_consumer_id: mallory']],
  ['mixed separators', ['x-consumer_id: mallory', 'X_Consumer-Id: eve']],
  ['named in Connection', ['Connection: x-consumer-id', 'x-consumer-id: mallory']],
  ['Connection trying to strip the verified header', ['Connection: close, x-consumer-id, x-consumer-scopes']],
  ['scopes forged', ['x-consumer-scopes: admin', 'X_CONSUMER_SCOPES: admin']],
  ['mapped claim forged', ['x-tenant-id: other', 'x_tenant_id: other']]
]

for (const [label, lines] of spoofs) {
  t.test(`spoofing: ${label}`, async (t) => {
    const response = await rawRequest(port, request(lines))
    t.equal(response.status, 200)
    const raw = upstream.requests.at(-1)?.rawHeaders ?? []
    t.same(valuesOf(raw, 'x-consumer-id'), ['alice'], 'exactly one x-consumer-id, the verified one')
    t.same(valuesOf(raw, 'x-consumer-scopes'), ['read'])
    t.same(valuesOf(raw, 'x-tenant-id'), ['acme'])
    t.same(valuesOf(raw, 'authorization'), [], 'the credential is not forwarded')
  })
}

t.test('without a credential, a spoofed identity is refused, never forwarded', async (t) => {
  const before = upstream.requests.length
  const response = await rawRequest(port, ['GET /api/x HTTP/1.1', 'Host: gw', 'Connection: close', 'x-consumer-id: alice', '', ''].join('\r\n'))
  t.equal(response.status, 401)
  t.equal(upstream.requests.length, before)
})
