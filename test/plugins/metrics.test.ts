// Metrics (issue 6): bounded series, /metrics protected by default, public / allowlisted / on a
// separate listener, and each gateway answer (401, 403, 429, breaker 503, 504, 502) moving its counter.
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import Fastify, { type FastifyInstance } from 'fastify'
import { Registry } from '@prometheus-io/client'
import { gateway, type GatewayOptions } from '../../lib/index.js'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const jwt = { secret: SECRET, audience: 'api' }

async function build (t: Test, options: Partial<GatewayOptions>, upstream?: TestUpstream): Promise<FastifyInstance> {
  const app = Fastify({ trustProxy: false })
  await app.register(gateway, {
    auth: { jwt },
    metrics: { processMetrics: false },
    services: upstream === undefined ? undefined : { users: { upstream: upstream.url, prefix: '/users', timeout: { headers: 300 }, retries: 0, breaker: { volumeThreshold: 2, errorThresholdPercentage: 40, resetTimeout: '1m' } } },
    ...options
  } as GatewayOptions)
  t.teardown(async () => { await app.close() })
  return app
}

/** The value of one series in the exposition text, 0 when absent. */
function sample (text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    const wanted = Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))
    if (wanted) return Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return 0
}

const seriesCount = (text: string): number => text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).length

t.test('10,000 requests to random unmatched paths do not grow the number of series', async (t) => {
  const app = await build(t, { auth: false, metrics: { processMetrics: false, expose: 'public' } })
  const scrape = async (): Promise<string> => (await app.inject({ url: '/metrics' })).body
  for (let i = 0; i < 100; i++) await app.inject({ url: `/warm-${i}` })
  await scrape()
  const before = seriesCount(await scrape())
  for (let i = 0; i < 10_000; i++) await app.inject({ url: `/random/${Math.random().toString(36).slice(2)}?q=${i}` })
  const text = await scrape()
  t.equal(seriesCount(text), before, 'same number of series after 10,000 distinct paths')
  t.equal(sample(text, 'gateway_requests_total', { route: 'unmatched', status_class: '4xx' }), 10_100)
  t.notMatch(text, /random\//, 'no raw path in any label')
  t.match(text, /http_request_duration_seconds_count\{[^}]*route="unmatched"/, 'the duration histogram labels them unmatched too')
})

t.test('/metrics needs a credential by default; public and allowlisted exposure', async (t) => {
  const app = await build(t, {})
  const anonymous = await app.inject({ url: '/metrics' })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().code, 'GATEWAY_ERR_UNAUTHENTICATED')
  const authorised = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(authorised.statusCode, 200)
  t.match(authorised.headers['content-type'], /^text\/plain/)

  const open = await build(t, { metrics: { processMetrics: false, expose: 'public' } })
  t.equal((await open.inject({ url: '/metrics' })).statusCode, 200, 'public: no credential needed')

  const allowlisted = await build(t, { metrics: { processMetrics: false, expose: { allow: ['10.0.0.0/8', '::1'] } } })
  t.equal((await allowlisted.inject({ url: '/metrics', remoteAddress: '10.1.2.3' })).statusCode, 200, 'allowed range')
  t.equal((await allowlisted.inject({ url: '/metrics', remoteAddress: '::ffff:10.9.9.9' })).statusCode, 200, 'IPv4-mapped address in the range')
  const refused = await allowlisted.inject({ url: '/metrics', remoteAddress: '192.0.2.7' })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().code, 'GATEWAY_ERR_FORBIDDEN')
})

t.test('on a separate listener: served there, not on the public port', async (t) => {
  const app = await build(t, { metrics: { processMetrics: false, expose: { port: 0 } } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.gatewayMetrics.address()
  t.ok(address !== null && address.address === '127.0.0.1', 'the listener binds loopback by default')
  const onPublic = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${hs256()}` } })
  t.equal(onPublic.statusCode, 404, 'the public port has no /metrics, even with a credential')
  const internal = await get(address?.port as number, '/metrics')
  t.equal(internal.status, 200)
  t.match(internal.body, /gateway_requests_total/)
  t.equal((await get(address?.port as number, '/other')).status, 404, 'the listener serves only the metrics path')
})

t.test('the caller\'s registry is used, and two apps in one process do not collide', async (t) => {
  const registry = new Registry()
  const one = await build(t, { auth: false, metrics: { registry, expose: false, processMetrics: true } })
  const two = await build(t, { auth: false, metrics: { expose: false, processMetrics: true } })
  await one.inject({ url: '/nothing' })
  t.equal(one.gatewayMetrics.registry, registry)
  t.match(await registry.metrics(), /gateway_requests_total\{[^}]*route="unmatched"[^}]*\} 1/)
  t.match(await registry.metrics(), /process_cpu_user_seconds_total/, 'process metrics in the caller\'s registry')
  t.notMatch(await two.gatewayMetrics.registry.metrics(), /gateway_requests_total\{/, 'the other app counted nothing')
})

t.test('without auth, the default (authenticated) exposure is refused at boot', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: false, metrics: {} })
  await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION' })
  await app.close()
})

t.test('invalid metrics options are refused at registration', async (t) => {
  for (const metrics of [{ expose: 'everyone' }, { expose: { allow: ['not-an-ip'] } }, { expose: { port: 70000 } }, { path: 'metrics' }, { buckets: [1, 0.5] }, { registry: {} }, { extra: 1 }]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(gateway, { auth: false, metrics } as never) }, { code: 'GATEWAY_ERR_INVALID_OPTION' }, JSON.stringify(metrics))
    await app.close()
  }
})

t.test('a 401, a 403, a 429, a 504, a 502 and a breaker 503 each move the right counter', async (t) => {
  const upstream = await createTestUpstream()
  t.teardown(async () => { await upstream.close() })
  const app = await build(t, {
    rateLimit: { perConsumer: { max: 2, window: '1m' } },
    // The allowlisted scraper is exempt from limits (a public one would spend the IP's quota).
    metrics: { processMetrics: false, expose: { allow: ['127.0.0.1'] } }
  }, upstream)
  const token = `Bearer ${hs256()}`
  const scrape = async (): Promise<string> => (await app.inject({ url: '/metrics' })).body

  t.equal((await app.inject({ url: '/users/1' })).statusCode, 401)
  t.equal((await app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256({ exp: 1 })}` } })).statusCode, 401)
  let text = await scrape()
  t.equal(sample(text, 'gateway_auth_failures_total', { reason: 'missing' }), 1)
  t.equal(sample(text, 'gateway_auth_failures_total', { reason: 'expired' }), 1)
  t.equal(sample(text, 'gateway_requests_total', { service: 'users', status_class: '4xx' }), 2)

  t.equal((await app.inject({ url: '/users/1', headers: { authorization: token } })).statusCode, 200)
  t.equal((await app.inject({ url: '/users/1', headers: { authorization: token } })).statusCode, 200)
  t.equal((await app.inject({ url: '/users/1', headers: { authorization: token } })).statusCode, 429)
  text = await scrape()
  t.equal(sample(text, 'gateway_rate_limited_total', { limit: 'consumer' }), 1)
  t.equal(sample(text, 'gateway_upstream_duration_seconds_count', { service: 'users', status_class: '2xx' }), 2)
  t.equal(sample(text, 'gateway_requests_total', { service: 'users', route: '/users/*', method: 'GET', status_class: '2xx' }), 2)

  // Fresh consumers from here on, so the limit stays out of the way.
  upstream.respond(() => 'hang')
  const slow = await app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256({ sub: 'bob' })}` } })
  t.equal(slow.statusCode, 504)
  upstream.respond(() => 'reset')
  const broken = await app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256({ sub: 'carol' })}` } })
  t.equal(broken.statusCode, 502)
  const refused = await app.inject({ url: '/users/1', headers: { authorization: `Bearer ${hs256({ sub: 'dave' })}` } })
  t.equal(refused.statusCode, 503)
  t.equal(refused.json().code, 'GATEWAY_ERR_CIRCUIT_OPEN')
  text = await scrape()
  t.equal(sample(text, 'gateway_upstream_errors_total', { service: 'users', kind: 'timeout' }), 1)
  t.equal(sample(text, 'gateway_upstream_errors_total', { service: 'users', kind: 'broken' }), 1)
  t.equal(sample(text, 'gateway_upstream_errors_total', { service: 'users', kind: 'circuit_open' }), 1)
  t.equal(sample(text, 'gateway_upstream_duration_seconds_count', { service: 'users', status_class: 'error' }), 2, 'the refused call has no duration')
  t.equal(sample(text, 'gateway_circuit_state', { service: 'users' }), 2, 'open')
  t.equal(sample(text, 'gateway_circuit_transitions_total', { service: 'users', to: 'open' }), 1)
  t.equal(sample(await scrape(), 'gateway_circuit_transitions_total', { service: 'users', to: 'open' }), 1, 'a scrape does not count a transition twice')
  t.notMatch(text, /alice|bob|Bearer|127\.0\.0\.1/, 'no consumer, credential or upstream address in any label')
})

t.test('a scope missing (403) and a JWKS-less key failure count by reason', async (t) => {
  const app = Fastify()
  await app.register(gateway, {
    auth: { jwt, apiKeys: { keys: { [createHash('sha256').update('the-right-key-of-24-chars').digest('hex')]: { id: 'svc' } } } },
    metrics: { processMetrics: false, expose: 'public' }
  })
  app.get('/admin', { config: { gateway: { scopes: ['admin'] } } }, async () => ({ ok: true }))
  t.teardown(async () => { await app.close() })
  t.equal((await app.inject({ url: '/admin', headers: { authorization: `Bearer ${hs256()}` } })).statusCode, 403)
  t.equal((await app.inject({ url: '/admin', headers: { 'x-api-key': 'wrong-key-of-16-chars' } })).statusCode, 401)
  t.equal((await app.inject({ url: '/admin', headers: { authorization: 'Bearer not.a.token' } })).statusCode, 401)
  const text = (await app.inject({ url: '/metrics' })).body
  t.equal(sample(text, 'gateway_auth_failures_total', { reason: 'insufficient_scope' }), 1)
  t.equal(sample(text, 'gateway_auth_failures_total', { reason: 'invalid_key' }), 1)
  t.equal(sample(text, 'gateway_auth_failures_total', { reason: 'invalid_token' }), 1)
})

async function get (port: number, path: string): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path, agent: false, timeout: 5000 }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, body }) })
    }).on('error', reject).end()
  })
}

t.test('durations and counts are exact and cumulative across scrapes (counted locally, added in at each scrape)', async (t) => {
  const registry = new Registry()
  const app = await build(t, { auth: false, metrics: { processMetrics: false, expose: 'public', registry, buckets: [0.5, 60] } })
  app.get('/fast', { config: { gateway: { public: true } } }, async () => 'ok')
  app.get('/slow', { config: { gateway: { public: true } } }, async () => { await new Promise((resolve) => setTimeout(resolve, 600)); return 'ok' })
  const scrape = async (): Promise<string> => (await app.inject({ url: '/metrics' })).body
  for (let i = 0; i < 3; i++) await app.inject({ url: '/fast' })
  await app.inject({ url: '/slow' })
  let text = await scrape()
  const fast = { route: '/fast', method: 'GET', status_code: '200' }
  t.equal(sample(text, 'http_request_duration_seconds_count', fast), 3)
  t.equal(sample(text, 'http_request_duration_seconds_bucket', { ...fast, le: '0.5' }), 3)
  t.equal(sample(text, 'http_request_duration_seconds_bucket', { route: '/slow', le: '0.5' }), 0, 'the slow request is above 0.5 s')
  t.equal(sample(text, 'http_request_duration_seconds_bucket', { route: '/slow', le: '60' }), 1)
  t.equal(sample(text, 'http_request_duration_seconds_bucket', { route: '/slow', le: '+Inf' }), 1)
  t.ok(sample(text, 'http_request_duration_seconds_sum', { route: '/slow' }) >= 0.6, 'the sum holds the slow request\'s duration')
  t.equal(sample(text, 'gateway_requests_total', { route: '/fast', status_class: '2xx' }), 3)
  for (let i = 0; i < 2; i++) await app.inject({ url: '/fast' })
  text = await scrape()
  t.equal(sample(text, 'http_request_duration_seconds_count', fast), 5, 'cumulative: 3 + 2')
  t.equal(sample(text, 'http_request_duration_seconds_bucket', { ...fast, le: '+Inf' }), 5)
  t.equal(sample(text, 'gateway_requests_total', { route: '/fast', status_class: '2xx' }), 5)
  text = await scrape()
  t.equal(sample(text, 'gateway_requests_total', { route: '/fast', status_class: '2xx' }), 5, 'a scrape without traffic adds nothing')
  t.equal(sample(text, 'http_request_duration_seconds_count', fast), 5)
})
