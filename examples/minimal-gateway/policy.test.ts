// How a team unit-tests its own policy: first the hook alone on a bare Fastify app, then wired into
// the gateway, where it runs after the gateway's auth, scope check and rate limits.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify'
// In your own project: import { createIdentityProvider, createTestUpstream, … } from 'fastify-gateway/testing'
import { createIdentityProvider, createTestUpstream, type IdentityProvider, type TestUpstream } from '../../lib/testing/index.js'
import { AUDIENCE, buildGateway } from './gateway.js'
import { requireTenant } from './policies.js'

const REPORTER_KEY = 'reporter-key'
const ACME_KEY = 'acme-only-key'
const NO_SCOPE_KEY = 'no-scope-key'
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')
const PROBLEM = 'application/problem+json; charset=utf-8'

t.test('requireTenant on its own: 400 without a valid x-tenant, 403 for another tenant, else the handler runs', async (t) => {
  // No gateway at all: the hook is a plain function, and its problems are the gateway's shape.
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  let handled = 0
  app.decorateRequest('consumer', null)
  app.addHook('onRequest', async (request) => {
    // Stands in for the gateway's auth: a consumer bound to tenant "acme".
    if (request.headers['x-test-consumer'] === 'acme') request.consumer = { id: 'c', kind: 'api-key', scopes: [], claims: { tenant: 'acme' } }
  })
  app.get('/report', { onRequest: requireTenant }, async () => {
    handled++
    return { ok: true }
  })

  for (const headers of [{}, { 'x-tenant': '' }, { 'x-tenant': 'ACME' }, { 'x-tenant': '../acme' }, { 'x-tenant': 'a'.repeat(64) }]) {
    const res = await app.inject({ method: 'GET', url: '/report', headers })
    t.equal(res.statusCode, 400, JSON.stringify(headers))
    t.equal(res.headers['content-type'], PROBLEM)
    t.equal(res.json().code, 'GATEWAY_ERR_BAD_REQUEST')
  }
  const repeated = await app.inject({ method: 'GET', url: '/report', headers: { 'x-tenant': ['acme', 'globex'] } })
  t.equal(repeated.statusCode, 400, 'a repeated header is refused, not guessed')

  const other = await app.inject({ method: 'GET', url: '/report', headers: { 'x-tenant': 'globex', 'x-test-consumer': 'acme' } })
  t.equal(other.statusCode, 403)
  t.equal(other.json().code, 'GATEWAY_ERR_FORBIDDEN')
  t.equal(handled, 0, 'the handler never ran for a refused request')

  t.equal((await app.inject({ method: 'GET', url: '/report', headers: { 'x-tenant': 'acme', 'x-test-consumer': 'acme' } })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/report', headers: { 'x-tenant': 'globex' } })).statusCode, 200, 'a consumer bound to no tenant may name any')
  t.equal(handled, 2)
})

interface Setup {
  app: FastifyInstance
  idp: IdentityProvider
  /** Behind every service; the report route is the team's own and must never reach it. */
  upstream: TestUpstream
  call: (key: string | undefined, headers?: InjectOptions['headers']) => Promise<{ status: number, body: any }>
}

async function setup (t: Test): Promise<Setup> {
  const [idp, upstream] = await Promise.all([createIdentityProvider({ audience: AUDIENCE }), createTestUpstream()])
  const app = await buildGateway({
    upstreams: { users: upstream.url, orders: upstream.url, payments: upstream.url },
    apiKeys: {
      [digest(REPORTER_KEY)]: { id: 'reporter', scopes: ['reports:read'] },
      [digest(ACME_KEY)]: { id: 'acme-bot', scopes: ['reports:read'], claims: { tenant: 'acme' } },
      [digest(NO_SCOPE_KEY)]: { id: 'no-scope' }
    },
    jwt: { issuer: idp.issuer },
    metrics: { port: 0 }
  })
  t.teardown(async () => {
    await app.close()
    await Promise.all([idp.close(), upstream.close()])
  })
  return {
    app,
    idp,
    upstream,
    async call (key, headers = {}) {
      const res = await app.inject({ method: 'GET', url: '/api/v1/reports/daily', headers: { ...(key === undefined ? {} : { 'x-api-key': key }), ...headers } })
      return { status: res.statusCode, body: res.json() }
    }
  }
}

t.test('in the gateway: auth first (401), then the scope (403), then the tenant (400/403)', async (t) => {
  const { call, upstream } = await setup(t)
  // Auth runs before the team's hook: a caller without a credential learns nothing about x-tenant.
  t.match(await call(undefined), { status: 401, body: { code: 'GATEWAY_ERR_UNAUTHENTICATED' } })
  t.match(await call(undefined, { 'x-tenant': 'acme' }), { status: 401, body: { code: 'GATEWAY_ERR_UNAUTHENTICATED' } })
  // config.gateway.scopes: a valid key without reports:read is refused by the gateway, before the hook.
  t.match(await call(NO_SCOPE_KEY), { status: 403, body: { code: 'GATEWAY_ERR_FORBIDDEN' } })
  t.match(await call(NO_SCOPE_KEY, { 'x-tenant': 'acme' }), { status: 403, body: { code: 'GATEWAY_ERR_FORBIDDEN' } })
  // With the scope, the team's hook decides.
  t.match(await call(REPORTER_KEY), { status: 400, body: { code: 'GATEWAY_ERR_BAD_REQUEST' } })
  t.same(await call(REPORTER_KEY, { 'x-tenant': 'acme' }), { status: 200, body: { report: 'daily', tenant: 'acme', consumer: 'reporter' } })
  // A key bound to a tenant (claims.tenant) may only act for it.
  t.match(await call(ACME_KEY, { 'x-tenant': 'globex' }), { status: 403, body: { code: 'GATEWAY_ERR_FORBIDDEN' } })
  t.same(await call(ACME_KEY, { 'x-tenant': 'acme' }), { status: 200, body: { report: 'daily', tenant: 'acme', consumer: 'acme-bot' } })
  t.equal(upstream.requests.length, 0, 'no upstream was called')
})

t.test('in the gateway, with JWTs: the scope and tenant come from the token', async (t) => {
  const { call, idp, upstream } = await setup(t)
  const bearer = (claims: Record<string, unknown>): InjectOptions['headers'] => ({ authorization: `Bearer ${idp.sign(claims)}`, 'x-tenant': 'acme' })
  t.match(await call(undefined, bearer({ sub: 'alice' })), { status: 403, body: { code: 'GATEWAY_ERR_FORBIDDEN' } }, 'no reports:read scope')
  t.same(await call(undefined, bearer({ sub: 'alice', scope: 'profile:read reports:read' })), { status: 200, body: { report: 'daily', tenant: 'acme', consumer: 'alice' } })
  t.match(await call(undefined, bearer({ sub: 'bob', scope: 'reports:read', tenant: 'globex' })), { status: 403, body: { code: 'GATEWAY_ERR_FORBIDDEN' } }, 'a token for another tenant')
  t.equal(upstream.requests.length, 0, 'no upstream was called')
})
