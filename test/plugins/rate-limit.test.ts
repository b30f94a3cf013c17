// Rate limits with the memory store: composition, keys, headers, tiers, dry run, exemptions, and
// the memory bound. (The Redis store and its failure modes: rate-limit-redis.test.ts.)
import t, { type Test } from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import Fastify, { type FastifyInstance } from 'fastify'
import { Pool } from 'undici'
import { gateway, gatewayServerOptions, type GatewayOptions, type GatewayRoutePolicy, type GatewayServiceOptions } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { listen } from '../helpers/gateway.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

async function build (t: Test, options: Omit<GatewayOptions, 'auth'>, serverOptions: Record<string, unknown> = {}, logs?: string[]): Promise<FastifyInstance> {
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs?.push(line) } } }, ...gatewayServerOptions(), ...serverOptions })
  await app.register(gateway, { auth: { jwt: { secret: SECRET, audience: 'api' }, public: ['/open/*'] }, ...options })
  app.get('/open/ping', async () => 'pong')
  app.get('/exempt', { config: { gateway: { rateLimit: false } } }, async () => 'exempt')
  app.get('/search', { config: { gateway: { rateLimit: { max: 2, window: '1m' } } } }, async () => 'search')
  t.teardown(() => app.close())
  return app
}
const as = (sub: string, claims: Record<string, unknown> = {}) => ({ authorization: `Bearer ${hs256({ sub, ...claims })}` })

t.test('max = 10, 50 parallel requests → exactly 10 reach the upstream', async (t) => {
  const app = await build(t, { services: { api: { upstream: upstream.url, prefix: '/api', rateLimit: { max: 10, window: '1m' } } } })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async () => await app.inject({ url: '/api/x', headers: as('alice') })))
  t.equal(responses.filter((response) => response.statusCode === 200).length, 10)
  t.equal(upstream.requests.length - before, 10, 'exactly 10 reached the upstream')
  const limited = responses.find((response) => response.statusCode === 429)
  t.equal(limited?.json().code, 'GATEWAY_ERR_RATE_LIMITED')
  t.match(limited?.headers['retry-after'], /^[1-9]\d*$/)
  t.equal(limited?.headers['ratelimit-policy'], '"api";q=10;w=60')
  t.match(limited?.headers.ratelimit, /^"api";r=0;t=\d+$/)
})

t.test('per-consumer and per-service limits both apply; the 429 carries the tripped limit\'s Retry-After', async (t) => {
  const app = await build(t, {
    rateLimit: { perConsumer: { max: 3, window: '1m' } },
    services: { api: { upstream: upstream.url, prefix: '/api', rateLimit: { max: 100, window: '10s' } } }
  })
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/api/x', headers: as('bob') })).statusCode, 200)
  const fourth = await app.inject({ url: '/api/x', headers: as('bob') })
  t.equal(fourth.statusCode, 429)
  t.ok(Number(fourth.headers['retry-after']) > 10, `the consumer limit's (1 min) Retry-After: ${String(fourth.headers['retry-after'])}`)
  t.equal(fourth.headers['ratelimit-policy'], '"consumer";q=3;w=60, "api";q=100;w=10')

  const strictService = await build(t, {
    rateLimit: { perConsumer: { max: 100, window: '1m' } },
    services: { api: { upstream: upstream.url, prefix: '/api', rateLimit: { max: 2, window: '10s' } } }
  })
  for (let i = 0; i < 2; i++) t.equal((await strictService.inject({ url: '/api/x', headers: as('bob') })).statusCode, 200)
  const third = await strictService.inject({ url: '/api/x', headers: as('bob') })
  t.equal(third.statusCode, 429)
  t.ok(Number(third.headers['retry-after']) <= 10, `the service limit's (10 s) Retry-After: ${String(third.headers['retry-after'])}`)
})

t.test('consumers have their own buckets; a service limit with by: "all" is shared', async (t) => {
  const app = await build(t, {
    rateLimit: { perConsumer: { max: 2, window: '1m' } },
    services: { shared: { upstream: upstream.url, prefix: '/shared', rateLimit: { max: 3, window: '1m', by: 'all' } } }
  })
  t.equal((await app.inject({ url: '/search', headers: as('a') })).statusCode, 200)
  t.equal((await app.inject({ url: '/search', headers: as('a') })).statusCode, 200)
  t.equal((await app.inject({ url: '/search', headers: as('a') })).statusCode, 429)
  t.equal((await app.inject({ url: '/search', headers: as('b') })).statusCode, 200, 'b has its own bucket')
  const shared = await Promise.all(['c', 'd', 'e', 'f'].map(async (sub) => (await app.inject({ url: '/shared/x', headers: as(sub) })).statusCode))
  t.same(shared.sort(), [200, 200, 200, 429], 'one bucket for everyone')
})

t.test('plan tiers: max depends on the consumer', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: (consumer) => consumer?.claims.plan === 'gold' ? 5 : 1, window: '1m' } } })
  app.get('/tiered', async () => 'ok')
  let gold = 0
  let free = 0
  for (let i = 0; i < 6; i++) {
    if ((await app.inject({ url: '/tiered', headers: as('g', { plan: 'gold' }) })).statusCode === 200) gold++
    if ((await app.inject({ url: '/tiered', headers: as('f', { plan: 'free' }) })).statusCode === 200) free++
  }
  t.equal(gold, 5)
  t.equal(free, 1)
})

t.test('rateLimit: false exempts a route from every limit, the consumer\'s included', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: 1, window: '1m' } } })
  for (let i = 0; i < 5; i++) {
    const response = await app.inject({ url: '/exempt', headers: as('x') })
    t.equal(response.statusCode, 200)
    t.equal(response.headers.ratelimit, undefined)
  }
})

t.test('dry run: counts and logs what would be blocked, never blocks, sends no headers', async (t) => {
  const logs: string[] = []
  const app = await build(t, { rateLimit: { perConsumer: { max: 2, window: '1m', dryRun: true } } }, {}, logs)
  app.get('/trial', async () => 'ok')
  for (let i = 0; i < 5; i++) {
    const response = await app.inject({ url: '/trial', headers: as('d') })
    t.equal(response.statusCode, 200)
    t.equal(response.headers.ratelimit, undefined)
  }
  const wouldBlock = logs.map((line) => JSON.parse(line)).filter((entry) => entry.limit === 'consumer' && typeof entry.key === 'string')
  t.equal(wouldBlock.length, 3, 'requests 3, 4 and 5 would have been blocked')
})

t.test('legacy X-RateLimit-* headers on request', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: 5, window: '1m' }, legacyHeaders: true } })
  const response = await app.inject({ url: '/search', headers: as('l') })
  t.equal(response.headers['x-ratelimit-limit'], '2', 'the most constrained limit')
  t.equal(response.headers['x-ratelimit-remaining'], '1')
  t.match(response.headers['x-ratelimit-reset'], /^\d+$/)
})

t.test('anonymous traffic: keyed by client IP as trustProxy sees it', async (t) => {
  const untrusted = await build(t, { rateLimit: { perConsumer: { max: 2, window: '1m' } } })
  const rotating = await Promise.all([1, 2, 3, 4].map(async (i) => (await untrusted.inject({ url: '/open/ping', remoteAddress: '198.51.100.1', headers: { 'x-forwarded-for': `203.0.113.${i}` } })).statusCode))
  t.same(rotating.sort(), [200, 200, 429, 429], 'rotating X-Forwarded-For from one untrusted peer stays in one bucket')

  const trusted = await build(t, { rateLimit: { perConsumer: { max: 1, window: '1m' } } }, { trustProxy: ['10.0.0.0/8'] })
  const clients = await Promise.all([1, 2, 3].map(async (i) => (await trusted.inject({ url: '/open/ping', remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': `203.0.113.${i}` } })).statusCode))
  t.same(clients, [200, 200, 200], 'behind a trusted proxy, each client has its own bucket')
})

t.test('IPv6 clients are grouped by /64; IPv4-mapped addresses fold into IPv4', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: 1, window: '1m' } } })
  const call = async (remoteAddress: string) => (await app.inject({ url: '/open/ping', remoteAddress })).statusCode
  t.equal(await call('2001:db8:1:2::1'), 200)
  t.equal(await call('2001:db8:1:2:ffff::9'), 429, 'same /64')
  t.equal(await call('2001:db8:1:3::1'), 200, 'another /64')
  t.equal(await call('192.0.2.7'), 200)
  t.equal(await call('::ffff:192.0.2.7'), 429, 'the mapped address is the IPv4 client')
})

t.test('a forged token carrying the victim\'s sub never spends the victim\'s quota', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: 3, window: '1m' } } })
  app.get('/quota', async () => 'ok')
  const forged = { authorization: `Bearer ${hs256({ sub: 'victim' }, 'attacker-secret-attacker-secret-attacker!')}` }
  for (let i = 0; i < 20; i++) t.equal((await app.inject({ url: '/quota', headers: forged })).statusCode, 401)
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/quota', headers: as('victim') })).statusCode, 200)
  t.equal((await app.inject({ url: '/quota', headers: as('victim') })).statusCode, 429)
})

t.test('invalid limits are refused at registration', async (t) => {
  for (const [rateLimit, path] of [
    [{ perConsumer: { max: 0.5, window: '1m' } }, 'rateLimit.perConsumer.max'],
    [{ perConsumer: { max: 10 } }, 'rateLimit.perConsumer.window'],
    [{ perConsumer: { max: 10, window: '1m', by: 'ip' } }, 'rateLimit.perConsumer.by'],
    [{ onStoreError: 'retry' }, 'rateLimit.onStoreError'],
    [{ store: {} }, 'rateLimit.store'],
    // The gateway puts the caller's identity in braces (the hash tag); a brace of the prefix would win.
    [{ keyPrefix: 'gw{eu}:' }, 'rateLimit.keyPrefix']
  ] as const) {
    const app = Fastify()
    app.register(gateway, { auth: false, rateLimit: rateLimit as never })
    await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: new RegExp(`"${path.replace(/\./g, '\\.')}"`) })
  }
})

t.test('120,000 distinct keys keep the memory store within its bound', async (t) => {
  // Real HTTP: light-my-request's inject retains ~9.5 KB per call, which would drown the measurement.
  v8.setFlagsFromString('--expose_gc')
  const gc = vm.runInNewContext('gc') as () => void
  const memoryKeys = 10_000
  const app = await build(t, { rateLimit: { perConsumer: { max: 5, window: '1m' }, memoryKeys } }, { trustProxy: ['127.0.0.1'] })
  const port = await listen(app)
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 8 })
  t.teardown(() => pool.close())
  const send = async (from: number, to: number, distinct: boolean): Promise<void> => {
    for (let i = from; i < to; i += 64) {
      await Promise.all(Array.from({ length: Math.min(64, to - i) }, async (_, j) => {
        const n = distinct ? i + j : 0
        const response = await pool.request({ path: '/open/ping', method: 'GET', headers: { 'x-forwarded-for': `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` } })
        await response.body.dump()
      }))
    }
  }
  await send(0, 20_000, true)
  gc()
  const warm = process.memoryUsage().heapUsed
  const started = Date.now()
  await send(20_000, 120_000, true)
  gc()
  const grown = process.memoryUsage().heapUsed - warm
  // docs/rate-limit.md: about 300 bytes per counter. Unbounded, 100,000 more counters would take
  // ≈ 30 MB; the heap reading itself swings by ±4 MB between runs, so the bound is a third of that.
  const bound = 100_000 * 300 / 3
  t.ok(grown < bound, `100,000 more distinct keys grew the heap by ${(grown / 1e6).toFixed(2)} MB (bound ${(bound / 1e6).toFixed(1)} MB) in ${Date.now() - started} ms`)
})

t.test('a caller over its own limit does not spend a limit everyone shares', async (t) => {
  const app = await build(t, {
    rateLimit: { perConsumer: { max: 1, window: '1m' } },
    services: { shared: { upstream: upstream.url, prefix: '/shared', rateLimit: { max: 3, window: '1m', by: 'all' } } }
  })
  t.equal((await app.inject({ url: '/shared/x', headers: as('noisy') })).statusCode, 200)
  for (let i = 0; i < 10; i++) t.equal((await app.inject({ url: '/shared/x', headers: as('noisy') })).statusCode, 429)
  t.equal((await app.inject({ url: '/shared/x', headers: as('quiet-1') })).statusCode, 200, 'the shared limit still has room')
  t.equal((await app.inject({ url: '/shared/x', headers: as('quiet-2') })).statusCode, 200)
  t.equal((await app.inject({ url: '/shared/x', headers: as('quiet-3') })).statusCode, 429, 'and it does limit')
})

t.test('a GET route limit also counts its automatic HEAD route, in one bucket', async (t) => {
  const app = await build(t, {})
  t.equal((await app.inject({ url: '/search', headers: as('h') })).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: '/search', headers: as('h') })).statusCode, 200)
  t.equal((await app.inject({ url: '/search', headers: as('h') })).statusCode, 429)
})

t.test('a max() that throws answers 500 for that limit only, never a store outage for everyone', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: (consumer) => { if (consumer?.id === 'odd') throw new Error('no plan'); return 5 }, window: '1m' } } })
  app.get('/plan', async () => 'ok')
  const odd = await app.inject({ url: '/plan', headers: as('odd') })
  t.equal(odd.statusCode, 500)
  t.equal(odd.json().code, 'GATEWAY_ERR_INTERNAL')
  t.equal((await app.inject({ url: '/plan', headers: as('normal') })).statusCode, 200)
})

t.test('the same sub at two issuers is two buckets', async (t) => {
  const app = await build(t, { rateLimit: { perConsumer: { max: 1, window: '1m' } } })
  app.get('/who', async () => 'ok')
  t.equal((await app.inject({ url: '/who', headers: as('sam', { iss: 'https://a.example' }) })).statusCode, 200)
  t.equal((await app.inject({ url: '/who', headers: as('sam', { iss: 'https://b.example' }) })).statusCode, 200)
  t.equal((await app.inject({ url: '/who', headers: as('sam', { iss: 'https://a.example' }) })).statusCode, 429)
})

t.test('rateLimit registered before auth (by hand) fails at boot; rateLimit: false refuses declared limits', async (t) => {
  const { correlationId, requestGuard, rateLimit, auth } = await import('../../lib/index.js')
  const wrong = Fastify()
  wrong.register(correlationId).register(requestGuard).register(rateLimit, {}).register(auth, { jwt: { secret: SECRET } })
  await t.rejects(async () => { await wrong.ready() }, /registered before fastify-gateway\.auth/)
  const off = Fastify()
  await off.register(gateway, { auth: false, rateLimit: false })
  t.throws(() => off.get('/x', { config: { gateway: { rateLimit: { max: 1, window: '1s' } } } }, async () => 'x'), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  await off.close()
})

t.test('two routes declared with one shared limit object still have a bucket each', async (t) => {
  const app = await build(t, {})
  const limit = { max: 1, window: '1m' } as const
  app.get('/one', { config: { gateway: { rateLimit: limit } } }, async () => 'one')
  app.get('/two', { config: { gateway: { rateLimit: limit } } }, async () => 'two')
  t.equal((await app.inject({ url: '/one', headers: as('s') })).statusCode, 200)
  t.equal((await app.inject({ url: '/two', headers: as('s') })).statusCode, 200)
  t.equal((await app.inject({ url: '/one', headers: as('s') })).statusCode, 429)
})

t.test('a route of the team\'s own naming a service cannot set or lift that service\'s limit', async (t) => {
  const services: Record<string, GatewayServiceOptions> = { api: { upstream: upstream.url, prefix: '/api', rateLimit: { max: 1000, window: '1m' } } }
  for (const declared of [{}, { rateLimit: { max: 5, window: '1m' } }] as GatewayRoutePolicy[]) {
    const app = await build(t, { services })
    t.throws(() => app.get('/mine', { config: { gateway: { service: 'api', ...declared } } }, async () => 'mine'), { code: 'GATEWAY_ERR_INVALID_OPTION', message: /config\.gateway of \/mine\.service/ }, JSON.stringify(declared))
  }
  // Registered before the gateway, it cannot fail at boot: it fails closed, and the service keeps its limit.
  const early = Fastify({ ...gatewayServerOptions() })
  early.get('/early', { config: { gateway: { service: 'api' } } }, async () => 'early')
  await early.register(gateway, { auth: false, services })
  t.teardown(() => early.close())
  const response = await early.inject({ url: '/early' })
  t.equal(response.statusCode, 500)
  t.equal(response.json().code, 'GATEWAY_ERR_INTERNAL')
  t.equal((await early.inject({ url: '/api/x' })).headers['ratelimit-policy'], '"api";q=1000;w=60', 'the service\'s own limit is intact')
})
