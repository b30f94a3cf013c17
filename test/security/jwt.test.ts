// SECURITY.md § D: forged, altered and confused tokens are refused; the key source comes from
// configuration only. One gateway with a JWKS issuer (RS256) and an HMAC secret, side by side.
import t from 'tap'
import { createHmac } from 'node:crypto'
import Fastify from 'fastify'
import { gateway, gatewayServerOptions } from '../../lib/index.js'
import { createIdentityProvider, createTestUpstream } from '../../lib/testing/index.js'
import { createEvilListener } from '../helpers/raw-http.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const idp = await createIdentityProvider()
const attacker = await createIdentityProvider()
const upstream = await createTestUpstream()
const evil = await createEvilListener()
const app = Fastify({ ...gatewayServerOptions() })
await app.register(gateway, {
  auth: {
    jwt: {
      secret: SECRET,
      audience: 'api',
      issuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, audience: 'test-api' }]
    }
  },
  services: { api: { upstream: upstream.url, prefix: '/api' } }
})
t.teardown(async () => {
  await app.close()
  await idp.close()
  await attacker.close()
  await upstream.close()
  await evil.close()
})

const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const hmac = (input: string, key: string | Buffer): string => createHmac('sha256', key).update(input).digest('base64url')
const now = Math.floor(Date.now() / 1000)
/** A compact JWS with any header and payload, HMAC-signed with `key` (or unsigned). */
function forge (header: unknown, payload: unknown, key?: string | Buffer): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${key === undefined ? '' : hmac(input, key)}`
}
const claims = { iss: idp.issuer, sub: 'victim', aud: 'test-api', exp: now + 300 }
const valid = idp.sign({ sub: 'victim' })
const [validHeader, validPayload, validSignature] = valid.split('.')
const evilUrl = () => `http://127.0.0.1:${evil.port}/jwks.json`

const cases: Array<[string, () => string]> = [
  ['alg none', () => forge({ alg: 'none', typ: 'JWT' }, claims)],
  ['alg None', () => forge({ alg: 'None' }, claims)],
  ['alg NONE with a signature', () => forge({ alg: 'NONE' }, claims, 'x')],
  ['stripped signature', () => `${validHeader}.${validPayload}.`],
  ['altered signature', () => `${validHeader}.${validPayload}.${validSignature.slice(0, -4)}AAAA`],
  ['edited payload, original signature', () => `${validHeader}.${b64({ ...claims, sub: 'admin' })}.${validSignature}`],
  ['HS256 signed with the RSA public key (PEM)', () => forge({ alg: 'HS256', kid: idp.kid }, claims, idp.publicKeyPem)],
  ['HS256 signed with the RSA public key (PEM, leading whitespace)', () => forge({ alg: 'HS256', kid: idp.kid }, claims, `\n  ${idp.publicKeyPem}`)],
  ['HS256 signed with the RSA public key (JWK JSON)', () => forge({ alg: 'HS256', kid: idp.kid }, claims, JSON.stringify(idp.publicJwk))],
  ['HS256 with the public key, claiming another issuer', () => forge({ alg: 'HS256' }, { ...claims, iss: 'https://other.example', aud: 'api' }, idp.publicKeyPem)],
  ['expired', () => idp.sign({ exp: now - 120 })],
  ['not yet valid', () => idp.sign({ nbf: now + 120 })],
  ['no exp', () => idp.sign({ exp: undefined })],
  ['exp as a string', () => forge({ alg: 'HS256' }, { sub: 'victim', aud: 'api', exp: String(now + 300) }, SECRET)],
  ['wrong iss (unlisted, no secret match)', () => idp.sign({ iss: 'https://evil.example' })],
  ['iss as an array', () => idp.sign({ iss: [idp.issuer] })],
  ['wrong aud', () => idp.sign({ aud: 'another-api' })],
  ['missing aud', () => idp.sign({ aud: undefined })],
  ['payload is an array', () => forge({ alg: 'HS256' }, [claims], SECRET)],
  ['payload is a string', () => forge({ alg: 'HS256' }, '"just a string"', SECRET)],
  ['no sub', () => idp.sign({ sub: undefined })],
  ['sub with a newline (header injection)', () => idp.sign({ sub: 'a\r\nx-admin: 1' })],
  // Signed with the attacker's own key, naming the real issuer, pointing at the attacker's keys.
  ['jku pointing at the evil listener', () => attacker.sign({ iss: idp.issuer }, { header: { jku: evilUrl() } })],
  ['x5u pointing at the evil listener', () => attacker.sign({ iss: idp.issuer }, { header: { x5u: evilUrl() } })],
  ['attacker key, no kid, jku', () => attacker.sign({ iss: idp.issuer }, { kid: undefined as never, header: { jku: evilUrl() } })],
  ['embedded jwk with the attacker key', () => forge({ alg: 'HS256', jwk: { kty: 'oct', k: b64('attacker') } }, claims, 'attacker')],
  ['unknown kid', () => idp.sign({}, { kid: 'not-a-key' })],
  ['HMAC token with the wrong secret', () => hs256({}, 'a-different-secret-that-is-32-bytes-long')],
  ['HMAC token with the wrong audience', () => hs256({ aud: 'test-api' })],
  ['oversized token', () => idp.sign({ padding: 'x'.repeat(9_000) })],
  ['two segments', () => `${validHeader}.${validPayload}`],
  ['garbage', () => 'not-a-token']
]

t.test('the valid tokens pass (control)', async (t) => {
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${valid}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${hs256()}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `bearer ${idp.sign({ exp: now - 10 })}` } })).statusCode, 200, 'expired within the 30 s clock tolerance')
  const withJku = idp.sign({}, { header: { jku: evilUrl(), x5u: evilUrl() } })
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${withJku}` } })).statusCode, 200, 'jku/x5u are ignored, not followed')
})

// Verified tokens are cached, found by their last characters and compared in full: a token that
// ends like a cached one (here: the same signature on an edited payload) must still be verified.
t.test('a token sharing a cached token\'s signature is verified, not served from the cache', async (t) => {
  const call = (authorization: string) => app.inject({ url: '/api/x', headers: { authorization } })
  t.equal((await call(`Bearer ${valid}`)).statusCode, 200, 'the valid token, verified before: from the cache')
  for (const spelling of [`bearer ${valid}`, `Bearer   ${valid}`, `BEARER ${valid}`]) t.equal((await call(spelling)).statusCode, 200, `the same token spelt ${JSON.stringify(spelling.slice(0, 9))}`)
  const before = upstream.requests.length
  const edited = `${validHeader}.${b64({ ...claims, sub: 'admin' })}.${validSignature}`
  t.equal(edited.slice(-32), valid.slice(-32), 'same cache key as the cached token')
  const response = await call(`Bearer ${edited}`)
  t.equal(response.statusCode, 401)
  t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  t.equal(upstream.requests.length, before, 'the upstream was not hit')
  t.equal((await call(`Bearer ${valid}`)).statusCode, 200, 'the cached token still passes')
  t.equal((await call(`Bearer ${valid} `)).statusCode, 401, 'a trailing space is not the cached token (nor a token at all)')
})

for (const [label, token] of cases) {
  t.test(`refused: ${label}`, async (t) => {
    const before = upstream.requests.length
    const started = Date.now()
    const response = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token()}` } })
    t.equal(response.statusCode, 401)
    t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
    t.equal(response.headers['www-authenticate'], 'Bearer realm="api", error="invalid_token"')
    t.notMatch(response.body, /victim|FAST_JWT|signature|expired/i, 'which check failed is not disclosed')
    t.equal(upstream.requests.length, before, 'the upstream was not hit')
    t.ok(Date.now() - started < 1_000, 'refused fast')
  })
}

t.test('at the end: the evil listener saw no connection; the JWKS was fetched once', async (t) => {
  t.equal(evil.connections, 0)
  t.equal(idp.jwksRequests, 1)
  t.equal(attacker.jwksRequests + attacker.discoveryRequests, 0)
})
