// API keys (SECURITY.md § E): compared by digest, near misses refused, never forwarded, lookups
// cached and bounded in time.
import t from 'tap'
import { createHash } from 'node:crypto'
import Fastify, { type FastifyInstance } from 'fastify'
import { gateway, gatewayServerOptions, type ApiKeyConsumer, type AuthApiKeyOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'

const KEY = 'k3y-Alpha-0123456789'
const digest = (key: string): string => createHash('sha256').update(key).digest('hex')
const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

async function build (apiKeys: AuthApiKeyOptions): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, {
    auth: { apiKeys },
    services: { api: { upstream: upstream.url, prefix: '/api' }, admin: { upstream: upstream.url, prefix: '/admin', scopes: ['admin'] } }
  })
  return app
}

t.test('static keys by digest: the exact key passes, every near miss is refused, nothing is forwarded', async (t) => {
  const app = await build({ keys: { [digest(KEY).toUpperCase()]: { id: 'alpha', scopes: ['read'] } } })
  t.teardown(() => app.close())
  const ok = await app.inject({ url: '/api/x?y=1', headers: { 'x-api-key': KEY } })
  t.equal(ok.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.headers['x-consumer-id'], 'alpha')
  t.equal(upstream.requests.at(-1)?.headers['x-api-key'], undefined, 'the key is removed before the upstream')

  const before = upstream.requests.length
  const nearMisses: Array<[string, string | string[]]> = [
    ['empty', ''],
    ['prefix', KEY.slice(0, -1)],
    ['suffix', `${KEY}x`],
    ['case', KEY.toLowerCase()],
    ['leading space', ` ${KEY}`],
    ['trailing space', `${KEY} `],
    ['inner space', `${KEY.slice(0, 4)} ${KEY.slice(4)}`],
    ['duplicated header', [KEY, KEY]],
    ['digest instead of key', digest(KEY)],
    ['very long', KEY.repeat(100)]
  ]
  for (const [label, value] of nearMisses) {
    const response = await app.inject({ url: '/api/x', headers: { 'x-api-key': value } })
    t.equal(response.statusCode, 401, label)
    t.equal(response.json().code, 'GATEWAY_ERR_UNAUTHENTICATED', label)
    t.equal(response.headers['www-authenticate'], 'ApiKey realm="api", header="x-api-key"', label)
    t.notMatch(response.body, KEY, `${label}: the key is not echoed`)
  }
  t.equal(upstream.requests.length, before, 'no near miss reached the upstream')
})

t.test('an API-key consumer without the scope → 403', async (t) => {
  const app = await build({ keys: { [digest(KEY)]: { id: 'alpha', scopes: ['read'] } } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/admin/x', headers: { 'x-api-key': KEY } })
  t.equal(response.statusCode, 403)
  t.equal(response.json().code, 'GATEWAY_ERR_FORBIDDEN')
})

t.test('lookup: called once per key within the cache TTL, unknown keys cached too', async (t) => {
  const calls: string[] = []
  const app = await build({
    lookup: async (key: string): Promise<ApiKeyConsumer | null> => {
      calls.push(key)
      return key === KEY ? { id: 'from-db', scopes: ['admin'], claims: { plan: 'gold' } } : null
    },
    cacheTtl: '1m'
  })
  t.teardown(() => app.close())
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/admin/x', headers: { 'x-api-key': KEY } })).statusCode, 200)
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/api/x', headers: { 'x-api-key': 'unknown' } })).statusCode, 401)
  t.same(calls, [KEY, 'unknown'])
  t.equal(upstream.requests.at(-1)?.headers['x-consumer-id'], 'from-db')
})

t.test('a lookup that fails → 503; one that hangs → 503 within its timeout', async (t) => {
  const app = await build({
    lookup: async (key: string) => {
      if (key === 'hang') return await new Promise<never>(() => {})
      throw new Error('database down at 10.1.2.3:5432')
    },
    lookupTimeout: 300
  })
  t.teardown(() => app.close())
  const failing = await app.inject({ url: '/api/x', headers: { 'x-api-key': 'boom' } })
  t.equal(failing.statusCode, 503)
  t.equal(failing.json().code, 'GATEWAY_ERR_AUTH_UNAVAILABLE')
  t.notMatch(failing.body, '10.1.2.3')
  const started = Date.now()
  const hanging = await app.inject({ url: '/api/x', headers: { 'x-api-key': 'hang' } })
  t.equal(hanging.statusCode, 503)
  t.ok(Date.now() - started < 300 + 200, `answered within the lookup timeout (${Date.now() - started} ms)`)
})

t.test('keys in the query string: ignored by default, accepted and stripped when enabled', async (t) => {
  const keys = { [digest(KEY)]: { id: 'alpha' } }
  const off = await build({ keys })
  t.teardown(() => off.close())
  t.equal((await off.inject({ url: `/api/x?api_key=${KEY}` })).statusCode, 401)

  const on = await build({ keys, query: 'api_key' })
  t.teardown(() => on.close())
  const response = await on.inject({ url: `/api/x?a=1&api_key=${KEY}&b=2` })
  t.equal(response.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.url, '/x?a=1&b=2', 'the key never reaches the upstream')
  t.equal((await on.inject({ url: `/api/x?api_key=${KEY}` })).statusCode, 200)
  t.equal(upstream.requests.at(-1)?.url, '/x')
})

t.test('a Basic Authorization header sent with an API key never reaches the upstream; bad scopes are dropped', async (t) => {
  const app = await build({ keys: { [digest(KEY)]: { id: 'alpha', scopes: ['read', 'two words', 'bad\nline', 'write'] } } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/api/x', headers: { 'x-api-key': KEY, authorization: 'Basic dXNlcjpwYXNz' } })
  t.equal(response.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.headers.authorization, undefined)
  t.equal(upstream.requests.at(-1)?.headers['x-consumer-scopes'], 'read write')
})
