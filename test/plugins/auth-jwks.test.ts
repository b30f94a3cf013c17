// JWKS failure modes (SECURITY.md § D, last bullet): bounded time, one fetch in flight per issuer,
// stale keys for a bounded time, then 503; rotation and removal; unknown-kid storms throttled.
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { gateway, gatewayServerOptions, type AuthJwtOptions } from '../../lib/index.js'
import { createIdentityProvider, type IdentityProvider } from '../../lib/testing/index.js'

async function build (t: Test, idp: IdentityProvider, jwks: AuthJwtOptions['jwks'], discovery = false): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, {
    auth: { jwt: { issuers: [{ issuer: idp.issuer, ...(discovery ? {} : { jwksUri: idp.jwksUri }), audience: 'test-api' }], jwks } }
  })
  app.get('/me', async (request) => request.consumer?.id)
  t.teardown(() => app.close())
  return app
}

const call = async (app: FastifyInstance, token: string) => await app.inject({ url: '/me', headers: { authorization: `Bearer ${token}` } })
const sleep = async (ms: number) => await new Promise((resolve) => setTimeout(resolve, ms))

t.test('keys are discovered from the issuer, fetched once, then served from the cache', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, {}, true)
  for (let i = 0; i < 5; i++) t.equal((await call(app, idp.sign({ sub: `user-${i}` }))).statusCode, 200)
  t.equal(idp.discoveryRequests, 1)
  t.equal(idp.jwksRequests, 1)
})

t.test('JWKS down with a warm cache → 200 inside the stale window', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, { ttl: 100, staleFor: '1m', refetchInterval: 0 })
  t.equal((await call(app, idp.sign())).statusCode, 200)
  idp.setMode('down')
  await sleep(150)
  for (let i = 0; i < 3; i++) t.equal((await call(app, idp.sign({ sub: `stale-${i}` }))).statusCode, 200, 'served from the stale cache')
})

t.test('JWKS down beyond the stale window → 503', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, { ttl: 100, staleFor: 100, refetchInterval: 0, timeout: 300 })
  t.equal((await call(app, idp.sign())).statusCode, 200)
  idp.setMode('down')
  await sleep(250)
  const response = await call(app, idp.sign({ sub: 'late' }))
  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'GATEWAY_ERR_AUTH_UNAVAILABLE')
})

t.test('with discovery, a hanging issuer is still answered within one timeout + 100 ms', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  idp.setMode('hang')
  const app = await build(t, idp, { timeout: 400 }, true)
  const started = Date.now()
  t.equal((await call(app, idp.sign())).statusCode, 503)
  t.ok(Date.now() - started < 500, `answered in ${Date.now() - started} ms`)
})

for (const mode of ['hang', 'down', 'garbage', 'empty'] as const) {
  t.test(`JWKS ${mode} with a cold cache → 503 within the fetch timeout + 100 ms`, async (t) => {
    const idp = await createIdentityProvider()
    t.teardown(() => idp.close())
    idp.setMode(mode)
    const app = await build(t, idp, { timeout: 400 })
    const started = Date.now()
    const response = await call(app, idp.sign())
    const elapsed = Date.now() - started
    // An empty key set is an answer: the kid is unknown (401), not an outage.
    t.equal(response.statusCode, mode === 'empty' ? 401 : 503)
    t.ok(elapsed < 400 + 100, `answered in ${elapsed} ms`)
  })
}

t.test('1,000 requests with random unknown kids → only a few fetches, all answered 401', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, { refetchInterval: '30s' })
  t.equal((await call(app, idp.sign())).statusCode, 200)
  const statuses = await Promise.all(Array.from({ length: 1_000 }, async (_, i) => (await call(app, idp.sign({}, { kid: `forged-${i}` }))).statusCode))
  t.ok(statuses.every((status) => status === 401), 'every forged kid refused')
  t.ok(idp.jwksRequests <= 2, `JWKS fetched ${idp.jwksRequests} times`)
})

t.test('concurrent requests on a cold cache share one fetch', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  idp.setMode('slow', 200)
  const app = await build(t, idp, {})
  const statuses = await Promise.all(Array.from({ length: 50 }, async (_, i) => (await call(app, idp.sign({ sub: `u${i}` }))).statusCode))
  t.ok(statuses.every((status) => status === 200))
  t.equal(idp.jwksRequests, 1)
})

t.test('rotation: a token signed with a new key is accepted after one refetch', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, { refetchInterval: 50 })
  t.equal((await call(app, idp.sign())).statusCode, 200)
  idp.rotate({ keepPrevious: true })
  await sleep(60)
  const before = idp.jwksRequests
  t.equal((await call(app, idp.sign({ sub: 'new-key' }))).statusCode, 200)
  t.equal(idp.jwksRequests, before + 1, 'exactly one refetch')
  t.equal((await call(app, idp.sign({ sub: 'old-key' }, { key: 'previous' }))).statusCode, 200, 'the old key still works while published')
})

t.test('a removed key stops working once the key set expires', async (t) => {
  const idp = await createIdentityProvider()
  t.teardown(() => idp.close())
  const app = await build(t, idp, { ttl: 100, staleFor: 0, refetchInterval: 0 })
  const oldToken = idp.sign({ sub: 'old' })
  t.equal((await call(app, oldToken)).statusCode, 200)
  idp.rotate({ keepPrevious: false })
  await sleep(150)
  const response = await call(app, idp.sign({ sub: 'old-again' }, { key: 'previous' }))
  t.equal(response.statusCode, 401, 'the removed key is refused')
  t.equal((await call(app, idp.sign({ sub: 'new' }))).statusCode, 200)
})

t.test('the JWKS URL comes from configuration: an unlisted issuer is never fetched', async (t) => {
  const idp = await createIdentityProvider()
  const stranger = await createIdentityProvider()
  t.teardown(async () => { await idp.close(); await stranger.close() })
  const app = await build(t, idp, {})
  const response = await call(app, stranger.sign({ aud: 'test-api' }))
  t.equal(response.statusCode, 401)
  t.equal(stranger.jwksRequests + stranger.discoveryRequests, 0, 'the unlisted issuer saw no request')
  t.equal(idp.jwksRequests, 0, 'nor did the configured one, for a token it did not issue')
})
