// SECURITY.md § G (rate limiting and Redis), black-box over real sockets with a real Redis: keys the
// client cannot steer, exact counts across instances, 429s without internals, every Redis failure
// (refusing, silent, answering errors) under every policy, recovery, and bounded memory.
// test/plugins/rate-limit-redis.test.ts has the longer forms of some rows.
import t, { type Test } from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { Redis } from 'ioredis'
import { Pool } from 'undici'
import { gateway, gatewayServerOptions, type RateLimitOptions } from '../../lib/index.js'
import { createTestUpstream, startTestRedis, type TestRedis } from '../../lib/testing/index.js'
import { listen } from '../helpers/gateway.js'
import { createEvilListener, rawGet, rawRequest, type RawResponse } from '../helpers/raw-http.js'
import { sendAll } from '../helpers/raw-pool.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const RETRY_MS = 200 // storeRetryInterval of the failure rows
const upstream = await createTestUpstream()
const evil = await createEvilListener()
const shared = await startTestRedis()
t.teardown(async () => {
  await upstream.close()
  await evil.close()
  await shared.stop()
})

async function ready (client: Redis): Promise<void> {
  const deadline = Date.now() + 10_000
  while (client.status !== 'ready') {
    if (Date.now() > deadline) throw new Error(`redis client not ready (status ${client.status})`)
    await sleep(20)
  }
}

interface Built { app: FastifyInstance, port: number, client: Redis, keyPrefix: string }
/** A listening gateway with its own ioredis client (as a separate process would have) on `redis`. */
async function build (t: Test, redis: TestRedis, rateLimit: Omit<RateLimitOptions, 'store'>, serverOptions: FastifyServerOptions = {}): Promise<Built> {
  const client = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
  client.on('error', () => {}) // expected while Redis is down
  await ready(client)
  const keyPrefix = rateLimit.keyPrefix ?? `sec-${randomUUID()}:`
  const app = Fastify({ ...gatewayServerOptions(), ...serverOptions })
  await app.register(gateway, {
    auth: { jwt: { secret: SECRET, audience: 'api' } },
    rateLimit: { store: client, ...rateLimit, keyPrefix },
    services: {
      api: { upstream: upstream.url, prefix: '/api', rewritePrefix: '/api' },
      open: { upstream: upstream.url, prefix: '/open', rewritePrefix: '/open', public: true }
    }
  })
  // Not proxied: the memory row measures the gateway, not the recording upstream's request log.
  app.get('/ping', { config: { gateway: { public: true } } }, async () => 'pong')
  const port = await listen(app)
  t.teardown(async () => {
    await app.close()
    client.disconnect()
  })
  return { app, port, client, keyPrefix }
}

const bearer = (token: string): string => `Authorization: Bearer ${token}`
const statusesOf = (responses: Array<{ status: number | undefined }>): Array<number | undefined> => responses.map((response) => response.status)

function assertNoInternals (t: Test, response: RawResponse, redis: TestRedis, keyPrefix: string, label: string): void {
  t.notMatch(response.body, /\n\s+at |redis|ioredis|ECONNREFUSED|OOM|maxmemory|127\.0\.0\.1/i, `${label}: no internal detail`)
  t.notMatch(response.body, String(redis.port), `${label}: no store port`)
  t.notMatch(response.body, keyPrefix, `${label}: no key name`)
}

// One socket, many client-chosen addresses: without a trusted proxy, the socket's address counts.
const rotations: Array<[string, (i: number) => string[]]> = [
  ['X-Forwarded-For', (i) => [`X-Forwarded-For: 203.0.113.${i}`]],
  ['X-Forwarded-For chain', (i) => [`X-Forwarded-For: 198.51.100.${i}, 203.0.113.${i}`]],
  ['Forwarded', (i) => [`Forwarded: for=203.0.113.${i}`]],
  ['X-Real-IP', (i) => [`X-Real-IP: 203.0.113.${i}`]],
  ['True-Client-IP and CF-Connecting-IP', (i) => [`True-Client-IP: 203.0.113.${i}`, `CF-Connecting-IP: 203.0.113.${i}`]],
  ['every header at once, IPv6', (i) => [`X-Forwarded-For: 2001:db8::${i}`, `X-Real-IP: 2001:db8::${i}`, `Forwarded: for="[2001:db8::${i}]"`, `X-Client-IP: 2001:db8::${i}`]]
]
for (const [label, headers] of rotations) {
  t.test(`rotating ${label} from one socket stays in one bucket`, async (t) => {
    const { port } = await build(t, shared, { perConsumer: { max: 3, window: '1m' }, onStoreError: 'closed' })
    const before = upstream.requests.length
    const responses = await sendAll(port, Array.from({ length: 8 }, (_, i) => rawGet(`/open/${i}`, headers(i + 1)).replace('Connection: close\r\n', '')), { size: 1 })
    t.same(statusesOf(responses), [200, 200, 200, 429, 429, 429, 429, 429])
    t.equal(upstream.requests.length - before, 3, 'exactly 3 reached the upstream')
  })
}

t.test('behind a trusted proxy, the right-most untrusted hop counts: rotating the left part stays in one bucket', async (t) => {
  const { port } = await build(t, shared, { perConsumer: { max: 2, window: '1m' }, onStoreError: 'closed' }, { trustProxy: ['127.0.0.1'] })
  const sameClient = await sendAll(port, Array.from({ length: 4 }, (_, i) => rawGet('/open/x', [`X-Forwarded-For: 198.51.100.${i + 1}, 203.0.113.9`])), { size: 1 })
  t.same(statusesOf(sameClient), [200, 200, 429, 429], 'one client, whatever it prepends')
  const otherClients = await sendAll(port, Array.from({ length: 3 }, (_, i) => rawGet('/open/x', [`X-Forwarded-For: 203.0.113.${20 + i}`])), { size: 1 })
  t.same(statusesOf(otherClients), [200, 200, 200], 'each client its own bucket')
})

// Forged credentials naming the victim: refused by auth before anything is counted.
const now = Math.floor(Date.now() / 1000)
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const forgeries: Array<[string, () => string]> = [
  ['signed with another secret', () => hs256({ sub: 'victim' }, 'attacker-secret-attacker-secret-attacker!')],
  ['alg none', () => `${b64({ alg: 'none' })}.${b64({ sub: 'victim', aud: 'api', exp: now + 300 })}.`],
  ['expired', () => hs256({ sub: 'victim', exp: now - 3_600 })],
  ['payload edited to the victim', () => { const [h, , s] = hs256({ sub: 'mallory' }).split('.'); return `${h}.${b64({ sub: 'victim', aud: 'api', exp: now + 300 })}.${s}` }],
  ['wrong audience', () => hs256({ sub: 'victim', aud: 'other-api' })]
]
for (const [label, forged] of forgeries) {
  t.test(`a forged token with the victim's sub never spends the victim's quota: ${label}`, async (t) => {
    const { port, client, keyPrefix } = await build(t, shared, { perConsumer: { max: 3, window: '1m' }, onStoreError: 'closed' })
    const attacks = await sendAll(port, Array.from({ length: 10 }, () => rawGet('/api/x', [bearer(forged())])), { size: 2 })
    t.same(statusesOf(attacks), Array(10).fill(401), 'every forgery refused')
    t.same(await client.keys(`${keyPrefix}*`), [], 'nothing counted in Redis for them')
    const victim = await sendAll(port, Array.from({ length: 4 }, () => rawGet('/api/x', [bearer(hs256({ sub: 'victim' }))])), { size: 1 })
    t.same(statusesOf(victim), [200, 200, 200, 429], 'the victim keeps its whole quota')
    t.match(victim[0].headers.ratelimit, /^"consumer";r=2;/)
  })
}

t.test('max = 10: 50 parallel connections → exactly 10 reach the upstream', async (t) => {
  const { port } = await build(t, shared, { perConsumer: { max: 10, window: '1m' }, onStoreError: 'closed' })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async () => await rawRequest(port, rawGet('/api/x', [bearer(hs256({ sub: 'burst' }))]))))
  t.equal(responses.filter((response) => response.status === 200).length, 10)
  t.equal(responses.filter((response) => response.status === 429).length, 40)
  t.equal(upstream.requests.length - before, 10, 'exactly 10 reached the upstream')
})

t.test('two gateway instances on one Redis: 50 parallel connections over both → 10 in total', async (t) => {
  const keyPrefix = `sec-${randomUUID()}:`
  const a = await build(t, shared, { perConsumer: { max: 10, window: '1m' }, onStoreError: 'closed', keyPrefix })
  const b = await build(t, shared, { perConsumer: { max: 10, window: '1m' }, onStoreError: 'closed', keyPrefix })
  const before = upstream.requests.length
  const responses = await Promise.all(Array.from({ length: 50 }, async (_, i) => await rawRequest(i % 2 === 0 ? a.port : b.port, rawGet('/api/x', [bearer(hs256({ sub: 'pair' }))]))))
  t.equal(responses.filter((response) => response.status === 200).length, 10)
  t.equal(upstream.requests.length - before, 10, 'exactly 10 in total')
})

t.test('a 429 carries Retry-After and the rate-limit headers, and no internal detail', async (t) => {
  const { port, keyPrefix } = await build(t, shared, { perConsumer: { max: 1, window: '1m' }, onStoreError: 'closed' })
  const token = hs256({ sub: 'carol' })
  t.equal((await rawRequest(port, rawGet('/api/x', [bearer(token)]))).status, 200)
  const limited = await rawRequest(port, rawGet('/api/x', [bearer(token)]))
  t.equal(limited.status, 429)
  t.match(limited.headers['content-type'], /^application\/problem\+json/)
  const body = JSON.parse(limited.body)
  t.equal(body.code, 'GATEWAY_ERR_RATE_LIMITED')
  t.same(Object.keys(body).sort(), ['code', 'requestId', 'status', 'title', 'type'], 'nothing but the problem fields')
  t.match(limited.headers['retry-after'], /^[1-9]\d*$/, 'Retry-After in whole seconds')
  t.ok(Number(limited.headers['retry-after']) <= 60, 'within the window')
  t.equal(limited.headers['ratelimit-policy'], '"consumer";q=1;w=60')
  t.match(limited.headers.ratelimit, /^"consumer";r=0;t=\d+$/)
  assertNoInternals(t, limited, shared, keyPrefix, '429')
  t.notMatch(limited.body, /carol|consumer/, 'no consumer id or key')
})

type Failure = 'refusing' | 'silent' | 'errors'
const outages: Array<[Failure, 'open' | 'closed' | 'local', number[]]> = [
  // [what Redis does, onStoreError, statuses of 3 requests after 1 counted in Redis (max 2)]
  ['refusing', 'open', [200, 200, 200]],
  ['refusing', 'closed', [503, 503, 503]],
  ['refusing', 'local', [200, 200, 429]],
  ['silent', 'open', [200, 200, 200]],
  ['silent', 'closed', [503, 503, 503]],
  ['silent', 'local', [200, 200, 429]],
  ['errors', 'open', [200, 200, 200]],
  ['errors', 'closed', [503, 503, 503]],
  ['errors', 'local', [200, 200, 429]]
]
for (const [failure, policy, expected] of outages) {
  t.test(`Redis ${failure}, onStoreError "${policy}": the policy within the timeout, then Redis again without a restart`, async (t) => {
    const redis = await startTestRedis()
    t.teardown(() => redis.stop())
    const admin = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 })
    admin.on('error', () => {})
    await ready(admin)
    t.teardown(() => admin.disconnect())
    const keyPrefix = `sec-${randomUUID()}:`
    const options = { perConsumer: { max: 2, window: '1m' }, onStoreError: policy, storeRetryInterval: RETRY_MS, keyPrefix } as const
    const a = await build(t, redis, options)
    const b = await build(t, redis, options)
    const dave = [bearer(hs256({ sub: 'dave' }))]
    t.equal((await rawRequest(a.port, rawGet('/api/x', dave))).status, 200, 'counted in Redis before the failure')

    if (failure === 'refusing') await redis.kill()
    else if (failure === 'silent') redis.pause()
    else await admin.config('SET', 'maxmemory', '1').then(async () => await admin.config('SET', 'maxmemory-policy', 'noeviction'))
    const during: RawResponse[] = []
    for (let i = 0; i < 3; i++) {
      const started = Date.now()
      const response = await rawRequest(a.port, rawGet('/api/x', dave))
      t.ok(Date.now() - started < 400, `request ${i + 1} answered in ${Date.now() - started} ms`)
      during.push(response)
      if (i === 0) await sleep(RETRY_MS + 50) // past storeRetryInterval: the store is tried (and fails) again
    }
    t.same(statusesOf(during), expected, 'the configured policy')
    for (const [i, response] of during.entries()) {
      assertNoInternals(t, response, redis, keyPrefix, `request ${i + 1}`)
      if (response.status === 503) {
        t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_RATE_LIMIT_STORE')
        t.match(response.headers['retry-after'], /^[1-9]\d*$/)
      }
      if (response.status === 429) t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_RATE_LIMITED')
    }

    if (failure === 'refusing') await redis.restart()
    else if (failure === 'silent') redis.resume()
    else await admin.config('SET', 'maxmemory', '0')
    for (const client of [a.client, b.client, admin]) await ready(client) // admin too: it reads the keys below
    await sleep(RETRY_MS + 50) // past storeRetryInterval: the next request uses Redis again
    // A consumer unseen during the outage: a count shared by A and B can only come from Redis.
    const erin = [bearer(hs256({ sub: 'erin' }))]
    const after = [
      await rawRequest(a.port, rawGet('/api/x', erin)),
      await rawRequest(a.port, rawGet('/api/x', erin)),
      await rawRequest(b.port, rawGet('/api/x', erin))
    ]
    t.same(statusesOf(after), [200, 200, 429], 'B sees what A counted: limiting through Redis resumed')
    t.ok((await admin.keys(`${keyPrefix}*`)).some((key) => key.includes('erin')), 'the counter is in Redis')
  })
}

t.test('Redis-backed counters expire: every key carries a TTL within its window', async (t) => {
  const { port, client, keyPrefix } = await build(t, shared, { perConsumer: { max: 5, window: '10s' }, onStoreError: 'closed' }, { trustProxy: ['127.0.0.1'] })
  const responses = await sendAll(port, Array.from({ length: 500 }, (_, i) => rawGet('/open/x', [`X-Forwarded-For: 10.9.${i >> 8}.${i & 255}`]).replace('Connection: close\r\n', '')), { size: 8 })
  t.same([...new Set(statusesOf(responses))], [200])
  const keys = await client.keys(`${keyPrefix}*`)
  t.equal(keys.length, 500, 'one counter per distinct client')
  const ttls = await Promise.all(keys.map(async (key) => await client.pttl(key)))
  t.ok(ttls.every((ttl) => ttl > 0 && ttl <= 10_000), 'every counter expires within the window')
})

t.test('100,000 distinct keys keep memory bounded, also in the local fallback while Redis is down', async (t) => {
  v8.setFlagsFromString('--expose_gc')
  const gc = vm.runInNewContext('gc') as () => void
  const redis = await startTestRedis()
  t.teardown(() => redis.stop())
  const memoryKeys = 10_000
  const { port } = await build(t, redis, { perConsumer: { max: 5, window: '1m' }, onStoreError: 'local', memoryKeys, storeRetryInterval: '10s' }, { trustProxy: ['127.0.0.1'], logger: false })
  await redis.kill()
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 8 })
  t.teardown(() => pool.close())
  let limited = 0
  const send = async (from: number, to: number): Promise<void> => {
    for (let i = from; i < to; i += 64) {
      await Promise.all(Array.from({ length: Math.min(64, to - i) }, async (_, j) => {
        const n = i + j
        const response = await pool.request({ path: '/ping', method: 'GET', headers: { 'x-forwarded-for': `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` } })
        if (response.statusCode === 429) limited++
        await response.body.dump()
      }))
    }
  }
  const started = Date.now()
  // Warm past the bound (the map full and evicting, every path compiled) before measuring, as the
  // plugin suite does: a map just full at the first reading left the measurement at the bound's edge.
  await send(0, 2 * memoryKeys)
  gc()
  gc()
  const warm = process.memoryUsage().heapUsed
  await send(2 * memoryKeys, 100_000)
  gc()
  gc()
  const grown = process.memoryUsage().heapUsed - warm
  // docs/rate-limit.md: about 300 bytes per counter. Unbounded, 80,000 more counters would take
  // ≈ 24 MB; the heap reading itself swings by ±4 MB between runs, so the bound is a third of that.
  const unbounded = (100_000 - 2 * memoryKeys) * 300
  t.ok(grown < unbounded / 3, `80,000 more distinct keys grew the heap by ${(grown / 1e6).toFixed(2)} MB (unbounded ≈ ${(unbounded / 1e6).toFixed(0)} MB), ${Date.now() - started} ms in all`)
  t.equal(limited, 0, 'every distinct client had its own count')
})

t.test('at the end: the evil listener saw no connection', async (t) => {
  t.equal(evil.connections, 0)
})
