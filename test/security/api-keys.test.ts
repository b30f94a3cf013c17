// SECURITY.md § E (API keys): near misses refused, keys matched by digest only, the query form
// refused unless enabled (and then kept out of the upstream and the logs), the credential removed
// before the upstream unless configured otherwise. Raw bytes over node:net: light-my-request would
// keep whitespace that Node's parser trims and refuse bytes Node accepts.
import t from 'tap'
import { createHash } from 'node:crypto'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway, listen } from '../helpers/gateway.js'
import { createEvilListener, rawGet, rawRequest } from '../helpers/raw-http.js'
import { createCanary } from '../helpers/canary.js'

const KEY = 'k3y-Alpha-0123456789'
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')
const keys = { [digest(KEY).toUpperCase()]: { id: 'alpha', scopes: ['read'] } }
const upstream = await createTestUpstream()
const evil = await createEvilListener()
const services = {
  api: { upstream: upstream.url, prefix: '/api', rewritePrefix: '/api' },
  open: { upstream: upstream.url, prefix: '/open', rewritePrefix: '/open', public: true }
}
const looked: string[] = []
const gateways = {
  strict: await buildTestGateway({ auth: { apiKeys: { keys } }, services }),
  query: await buildTestGateway({ auth: { apiKeys: { keys, query: 'api_key' } }, services }),
  forwarding: await buildTestGateway({ auth: { apiKeys: { keys, query: 'api_key' }, forwardCredentials: true }, services }),
  lookup: await buildTestGateway({
    auth: { apiKeys: { lookup: async (key: string) => { looked.push(key); return key === KEY ? { id: 'from-lookup' } : null }, cacheTtl: '1m' } },
    services
  })
}
type Name = keyof typeof gateways
const ports = {} as Record<Name, number>
for (const name of Object.keys(gateways) as Name[]) ports[name] = await listen(gateways[name].app)
t.teardown(async () => {
  for (const { app } of Object.values(gateways)) await app.close()
  await upstream.close()
  await evil.close()
})

const assertOnlyCanary = createCanary(upstream, '/api', [`X-Api-Key: ${KEY}`])

const NBSP = '\u00a0' // obs-text: kept by Node's parser, so it is part of the value
const nearMisses: Array<[string, Name, string, string[], number, string | null]> = [
  // [case, gateway, target, header lines, status, code (null: Node's parser refused it)]
  ['empty value', 'strict', '/api/x', ['X-Api-Key: '], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['prefix', 'strict', '/api/x', [`X-Api-Key: ${KEY.slice(0, -1)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['first character only', 'strict', '/api/x', [`X-Api-Key: ${KEY[0]}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['suffix', 'strict', '/api/x', [`X-Api-Key: ${KEY}0`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['lower-cased', 'strict', '/api/x', [`X-Api-Key: ${KEY.toLowerCase()}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['upper-cased', 'strict', '/api/x', [`X-Api-Key: ${KEY.toUpperCase()}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['one letter case-flipped', 'strict', '/api/x', [`X-Api-Key: K${KEY.slice(1)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['leading no-break space', 'strict', '/api/x', [`X-Api-Key: ${NBSP}${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['trailing no-break space', 'strict', '/api/x', [`X-Api-Key: ${KEY}${NBSP}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['inner space', 'strict', '/api/x', [`X-Api-Key: ${KEY.slice(0, 4)} ${KEY.slice(4)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['inner tab', 'strict', '/api/x', [`X-Api-Key: ${KEY.slice(0, 4)}\t${KEY.slice(4)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['quoted', 'strict', '/api/x', [`X-Api-Key: "${KEY}"`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['trailing vertical tab', 'strict', '/api/x', [`X-Api-Key: ${KEY}\x0b`], 400, null],
  ['trailing NUL', 'strict', '/api/x', [`X-Api-Key: ${KEY}\x00`], 400, null],
  ['sent twice (joined by Node)', 'strict', '/api/x', [`X-Api-Key: ${KEY}`, `X-Api-Key: ${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['a wrong key, then the right one', 'strict', '/api/x', ['X-Api-Key: wrong', `X-Api-Key: ${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['its SHA-256 digest instead of the key', 'strict', '/api/x', [`X-Api-Key: ${digest(KEY)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['its digest in upper case', 'strict', '/api/x', [`X-Api-Key: ${digest(KEY).toUpperCase()}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['base64 of the key', 'strict', '/api/x', [`X-Api-Key: ${Buffer.from(KEY).toString('base64')}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['over 512 characters, starting with the key', 'strict', '/api/x', [`X-Api-Key: ${KEY}${'x'.repeat(600)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['underscore header name', 'strict', '/api/x', [`X_Api_Key: ${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['in Authorization instead', 'strict', '/api/x', [`Authorization: ApiKey ${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['as a Bearer token', 'strict', '/api/x', [`Authorization: Bearer ${KEY}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['in the query, query keys not enabled', 'strict', `/api/x?api_key=${KEY}`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: empty value', 'query', '/api/x?api_key=', [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: encoded leading space', 'query', `/api/x?api_key=%20${KEY}`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: encoded trailing space', 'query', `/api/x?api_key=${KEY}%20`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: plus as a leading space', 'query', `/api/x?api_key=+${KEY}`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: encoded tab', 'query', `/api/x?api_key=${KEY}%09`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: encoded NUL', 'query', `/api/x?api_key=${KEY}%00`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: parameter name in another case', 'query', `/api/x?API_KEY=${KEY}`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['query: bracketed parameter name', 'query', `/api/x?api_key[]=${KEY}`, [], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['lookup: trailing no-break space', 'lookup', '/api/x', [`X-Api-Key: ${KEY}${NBSP}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED'],
  ['lookup: prefix', 'lookup', '/api/x', [`X-Api-Key: ${KEY.slice(0, -1)}`], 401, 'GATEWAY_ERR_UNAUTHENTICATED']
]

for (const [label, name, target, headers, status, code] of nearMisses) {
  t.test(`refused: ${label} (${name})`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(ports[name], rawGet(target, headers))
    t.equal(response.status, status, 'status')
    const body = JSON.parse(response.body)
    t.equal(body.code, code ?? 'GATEWAY_ERR_BAD_REQUEST', 'code')
    if (status === 401) t.match(response.headers['www-authenticate'], /ApiKey realm="api", header="x-api-key"/)
    t.notMatch(response.body, KEY, 'the key is not echoed')
    await assertOnlyCanary(t, { port: ports[name], label, since: before })
  })
}

// Optional whitespace around a field value is not part of it (RFC 9110 § 5.5): Node removes it,
// so these are the exact key on the wire.
const accepted: Array<[string, Name, string, string[]]> = [
  ['exact key', 'strict', '/api/x', [`X-Api-Key: ${KEY}`]],
  ['header name in any case', 'strict', '/api/x', [`x-API-key: ${KEY}`]],
  ['optional whitespace around the value', 'strict', '/api/x', [`X-Api-Key:  \t${KEY} \t`]],
  ['query key when enabled', 'query', `/api/x?api_key=${KEY}`, []],
  ['lookup: exact key', 'lookup', '/api/x', [`X-Api-Key: ${KEY}`]]
]
for (const [label, name, target, headers] of accepted) {
  t.test(`accepted: ${label} (${name})`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(ports[name], rawGet(target, headers))
    t.equal(response.status, 200)
    await upstream.waitForRequests(before + 1)
    t.equal(upstream.requests.at(-1)?.headers['x-consumer-id'], name === 'lookup' ? 'from-lookup' : 'alpha')
  })
}

t.test('matched by digest: the lookup sees exact bytes, never a trimmed or decoded variant', async (t) => {
  // Sent as UTF-8, read by Node as latin1: the lookup gets those bytes, not a normalised key.
  t.ok(looked.includes(Buffer.from(`${KEY}${NBSP}`).toString('latin1')), 'the near miss was looked up as sent')
  t.ok(looked.includes(KEY.slice(0, -1)))
  t.equal(looked.filter((key) => key === KEY).length, 1, 'the valid key was looked up once (cached by digest)')
})

t.test('keys are configured by digest only: a key in clear is refused at boot', async (t) => {
  await t.rejects(buildTestGateway({ auth: { apiKeys: { keys: { [KEY]: { id: 'alpha' } } } } }), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  await t.rejects(buildTestGateway({ auth: { apiKeys: { keys: { [digest(KEY).slice(1)]: { id: 'alpha' } } } } }), { code: 'GATEWAY_ERR_INVALID_OPTION' }, 'a truncated digest too')
})

const removal: Array<[string, Name, string, string[], { key?: string, url: string, authorization?: string }]> = [
  // [case, gateway, target, header lines, what the upstream must receive]
  ['header key removed', 'strict', '/api/r1', [`X-Api-Key: ${KEY}`], { url: '/api/r1' }],
  ['a Basic Authorization sent along is removed too', 'strict', '/api/r2', [`X-Api-Key: ${KEY}`, 'Authorization: Basic dXNlcjpwYXNz'], { url: '/api/r2' }],
  ['query key removed, other parameters kept in order', 'query', `/api/r3?a=1&api_key=${KEY}&b=%20`, [], { url: '/api/r3?a=1&b=%20' }],
  ['a second query key removed too', 'query', `/api/r4?api_key=${KEY}&api_key=other`, [], { url: '/api/r4' }],
  ['query key removed when the header key was used', 'query', '/api/r5?api_key=other', [`X-Api-Key: ${KEY}`], { url: '/api/r5' }],
  ['on a public route, neither form is forwarded', 'query', `/open/r6?api_key=${KEY}`, [`X-Api-Key: ${KEY}`], { url: '/open/r6' }],
  ['forwardCredentials: the header key is forwarded', 'forwarding', '/api/r7', [`X-Api-Key: ${KEY}`, 'Authorization: Basic dXNlcjpwYXNz'], { key: KEY, url: '/api/r7', authorization: 'Basic dXNlcjpwYXNz' }],
  ['forwardCredentials: the query key is removed anyway', 'forwarding', `/api/r8?api_key=${KEY}`, [], { url: '/api/r8' }]
]
for (const [label, name, target, headers, expected] of removal) {
  t.test(`credential before the upstream: ${label}`, async (t) => {
    const before = upstream.requests.length
    const response = await rawRequest(ports[name], rawGet(target, headers))
    t.equal(response.status, 200)
    await upstream.waitForRequests(before + 1)
    const received = upstream.requests.at(-1)
    t.equal(received?.url, expected.url, 'url')
    t.equal(received?.headers['x-api-key'], expected.key, 'x-api-key')
    t.equal(received?.headers.authorization, expected.authorization, 'authorization')
    if (expected.key === undefined) t.notMatch(JSON.stringify(received?.rawHeaders), KEY, 'the key in no header at all')
  })
}

t.test('an underscore spelling of the key header never reaches the upstream', async (t) => {
  // CGI-style upstreams (and nginx with underscores_in_headers) read x_api_key as X-Api-Key.
  const before = upstream.requests.length
  const response = await rawRequest(ports.strict, rawGet('/api/r9', [`X-Api-Key: ${KEY}`, 'X_Api_Key: unverified']))
  t.equal(response.status, 200)
  await upstream.waitForRequests(before + 1)
  t.notMatch(JSON.stringify(upstream.requests.at(-1)?.rawHeaders), 'unverified', 'no spelling of the credential header is forwarded')
})

t.test('a query key, accepted when enabled, is never written to the logs', async (t) => {
  const marker = 'k3y-Alpha-0123456789'
  t.equal((await rawRequest(ports.query, rawGet(`/api/logged?api_key=${marker}`))).status, 200)
  const leaking = gateways.query.logs.filter((line) => line.includes(marker))
  t.same(leaking.map((line) => JSON.parse(line).msg), [], 'no log line carries the key')
})

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
