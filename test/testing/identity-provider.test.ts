// The test identity provider: its documents, its tokens (checked by fast-jwt's verifier against the
// JWKS it serves), key rotation, and every failure mode, over real HTTP on 127.0.0.1.
import t from 'tap'
import { createPublicKey } from 'node:crypto'
import { createDecoder, createVerifier } from 'fast-jwt'
import { createIdentityProvider, type IdentityProviderAlgorithm, type IdentityProvider } from '../../lib/testing/index.js'

const decode = createDecoder({ complete: true })
const FETCH_TIMEOUT_MS = 2_000

async function get (url: string, timeoutMs = FETCH_TIMEOUT_MS): Promise<Response> {
  return fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
}

async function jwks (idp: IdentityProvider): Promise<Array<Record<string, any>>> {
  const response = await get(idp.jwksUri)
  const body = await response.json() as { keys: Array<Record<string, any>> }
  return body.keys
}

/** Verify a token the way a relying party would: key found by kid in the JWKS, converted to PEM. */
async function verify (idp: IdentityProvider, token: string, algorithm: IdentityProviderAlgorithm): Promise<Record<string, any>> {
  const { kid } = decode(token).header
  const jwk = (await jwks(idp)).find((key) => key.kid === kid)
  if (jwk === undefined) throw new Error(`kid ${kid} not in the JWKS`)
  const pem = createPublicKey({ key: jwk as any, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string
  return createVerifier({ key: pem, algorithms: [algorithm], allowedIss: idp.issuer, allowedAud: 'test-api' })(token)
}

/** Poll until `predicate` holds (bounded). */
async function until (predicate: () => boolean, timeoutMs = FETCH_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

t.test('serves discovery and JWKS documents and counts them', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  t.match(idp.issuer, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.equal(idp.jwksUri, `${idp.issuer}/.well-known/jwks.json`)

  const discovery = await get(`${idp.issuer}/.well-known/openid-configuration`)
  t.equal(discovery.status, 200)
  t.match(discovery.headers.get('content-type'), /^application\/json/)
  t.same(await discovery.json(), { issuer: idp.issuer, jwks_uri: idp.jwksUri })
  t.equal(idp.discoveryRequests, 1)
  t.equal(idp.jwksRequests, 0)

  const keys = await jwks(idp)
  t.equal(idp.jwksRequests, 1)
  t.equal(keys.length, 1)
  t.match(keys[0], { kty: 'RSA', kid: idp.kid, use: 'sig', alg: 'RS256', n: String, e: 'AQAB' })
  t.notOk('d' in keys[0], 'no private key material')
  t.match(idp.kid, /^[0-9a-f]{8}$/)
  t.same(idp.publicJwk, keys[0])
  const pemFromJwk = createPublicKey({ key: keys[0] as any, format: 'jwk' }).export({ type: 'spki', format: 'pem' })
  t.equal(idp.publicKeyPem, pemFromJwk)

  t.equal((await get(`${idp.jwksUri}?v=2`)).status, 200, 'query string ignored')
  t.equal((await get(`${idp.issuer}/other`)).status, 404)
  t.equal((await fetch(idp.jwksUri, { method: 'POST', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) })).status, 404)
  t.equal(idp.jwksRequests, 2, '404s not counted')
})

for (const algorithm of ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'] as const) {
  t.test(`${algorithm}: a signed token verifies against the published JWKS`, async (t) => {
    const idp = await createIdentityProvider({ algorithm })
    t.teardown(() => idp.close())
    const before = Math.floor(Date.now() / 1000)
    const token = idp.sign()
    const payload = await verify(idp, token, algorithm)
    t.match(payload, { iss: idp.issuer, aud: 'test-api', sub: 'user-1' })
    t.ok(payload.iat >= before && payload.iat <= before + 1, 'iat is now')
    t.equal(payload.exp - payload.iat, 300)
    t.same(decode(token).header, { alg: algorithm, typ: 'JWT', kid: idp.kid })
    t.equal((await jwks(idp))[0].alg, algorithm)
  })
}

t.test('claims override and remove defaults; unencodable values throw', async (t) => {
  const idp = await createIdentityProvider({ algorithm: 'ES256', audience: 'orders' })
  t.teardown(() => idp.close())
  t.match(decode(idp.sign()).payload, { aud: 'orders' })

  const custom = decode(idp.sign({ sub: 'alice', aud: ['a', 'b'], scope: 'orders:read', exp: undefined })).payload
  t.match(custom, { sub: 'alice', aud: ['a', 'b'], scope: 'orders:read', iat: Number })
  t.notOk('exp' in custom, 'exp removed')

  t.same(decode(idp.sign({ iss: undefined, aud: undefined, sub: undefined, iat: undefined, exp: undefined })).payload, {}, 'iat removed too')
  t.same(decode(idp.sign({ iat: 1_000, exp: 2_000, nbf: 1_500 })).payload, { iss: idp.issuer, aud: 'orders', sub: 'user-1', iat: 1_000, exp: 2_000, nbf: 1_500 })

  for (const claims of [{ exp: 0 }, { exp: 'soon' }, { exp: null }, { nbf: -1 }, { iat: 1.5 }, { iat: '0' }]) {
    t.throws(() => idp.sign(claims), TypeError, `refuses ${JSON.stringify(claims)}`)
  }
})

t.test('header fields are added and overridden', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  t.same(decode(idp.sign({}, { header: { jku: 'http://evil.example/jwks.json' } })).header,
    { alg: 'RS256', typ: 'JWT', kid: idp.kid, jku: 'http://evil.example/jwks.json' })
  t.equal(decode(idp.sign({}, { kid: 'unknown-kid' })).header.kid, 'unknown-kid')
  t.same(decode(idp.sign({}, { header: { kid: undefined, typ: 'at+jwt' } })).header, { alg: 'RS256', typ: 'at+jwt' })
  t.equal(decode(idp.sign({}, { header: { alg: 'none' } })).header.alg, 'none', 'the header may lie about alg')
})

t.test('rotate() replaces the key; key: previous signs with the replaced one', async (t) => {
  const idp = await createIdentityProvider({ algorithm: 'ES256' })
  t.teardown(() => idp.close())
  t.throws(() => idp.sign({}, { key: 'previous' }), Error, 'no previous key before a rotation')

  const first = idp.kid
  const firstPem = idp.publicKeyPem
  idp.rotate()
  const second = idp.kid
  t.not(second, first)
  t.not(idp.publicKeyPem, firstPem)
  t.same((await jwks(idp)).map((key) => key.kid), [second], 'old key no longer published')

  const old = idp.sign({}, { key: 'previous' })
  t.equal(decode(old).header.kid, first)
  t.ok(createVerifier({ key: firstPem, algorithms: ['ES256'] })(old), 'signed with the old key')
  await t.rejects(verify(idp, old, 'ES256'), 'the JWKS cannot verify it any more')
  t.ok(await verify(idp, idp.sign(), 'ES256'), 'a new token verifies')

  idp.rotate({ keepPrevious: true })
  t.not(idp.kid, second)
  t.same((await jwks(idp)).map((key) => key.kid), [idp.kid, second], 'current and previous published')
  t.ok(await verify(idp, idp.sign({}, { key: 'previous' }), 'ES256'))
  t.ok(await verify(idp, idp.sign(), 'ES256'))
})

t.test('modes', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const discoveryUrl = `${idp.issuer}/.well-known/openid-configuration`

  t.test('down → 503 on both documents', async (t) => {
    idp.setMode('down')
    t.equal((await get(idp.jwksUri)).status, 503)
    t.equal((await get(discoveryUrl)).status, 503)
  })

  t.test('garbage → 200 that is not JSON', async (t) => {
    idp.setMode('garbage')
    const response = await get(idp.jwksUri)
    t.equal(response.status, 200)
    await t.rejects(response.json(), SyntaxError)
  })

  t.test('empty → no keys', async (t) => {
    idp.setMode('empty')
    t.same(await (await get(idp.jwksUri)).json(), { keys: [] })
    t.same(await (await get(discoveryUrl)).json(), {})
  })

  t.test('slow → served after the delay', async (t) => {
    idp.setMode('slow', 300)
    const started = performance.now()
    const keys = await jwks(idp)
    const elapsed = performance.now() - started
    t.equal(keys[0].kid, idp.kid)
    t.ok(elapsed >= 299, `took ${Math.round(elapsed)} ms`)
  })

  t.test('hang → the client times out', async (t) => {
    idp.setMode('hang')
    const before = idp.jwksRequests
    await t.rejects(get(idp.jwksUri, 300), { name: 'TimeoutError' })
    t.equal(idp.jwksRequests, before + 1, 'a hanging request is counted')
  })

  t.test('up again → served', async (t) => {
    idp.setMode('up')
    t.equal((await jwks(idp))[0].kid, idp.kid)
  })

  t.test('bad arguments throw', async (t) => {
    t.throws(() => idp.setMode('sideways' as any), TypeError)
    t.throws(() => idp.setMode('slow', -1), TypeError)
  })

  t.test('every request counted, in any mode', async (t) => {
    t.equal(idp.jwksRequests, 6)
    t.equal(idp.discoveryRequests, 2)
  })
})

t.test('close() is prompt with hanging and slow requests in flight', async (t) => {
  const hanging = await createIdentityProvider()
  hanging.setMode('hang')
  // Assertions attached now: the requests fail during close(), before they would be awaited.
  const pending = t.rejects(get(hanging.jwksUri, 5_000), { name: 'TypeError' }, 'the hanging request fails instead of waiting')
  await until(() => hanging.jwksRequests === 1)

  const slow = await createIdentityProvider()
  slow.setMode('slow', 5_000)
  const delayed = t.rejects(get(slow.jwksUri, 6_000), { name: 'TypeError' }, 'so does the slow one')
  await until(() => slow.jwksRequests === 1)

  const started = performance.now()
  await Promise.all([hanging.close(), slow.close()])
  t.ok(performance.now() - started < 500, 'closed promptly')
  await Promise.all([pending, delayed])
  t.ok(performance.now() - started < 1_000, 'clients released promptly')
})

t.test('unsupported algorithm is refused', async (t) => {
  await t.rejects(createIdentityProvider({ algorithm: 'HS256' as any }), TypeError)
})
