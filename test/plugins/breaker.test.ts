// Circuit breaker per service (SECURITY.md § H): fast failure with the upstream frozen, 4xx not
// counted, services isolated, exactly one half-open probe, no timers left after close().
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import Fastify, { type FastifyInstance } from 'fastify'
import { gateway, type BreakerPolicy } from '../../lib/index.js'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'

const RESET_MS = 300
const policy: BreakerPolicy = { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeout: RESET_MS }

async function build (t: Test): Promise<{ app: FastifyInstance, a: TestUpstream, b: TestUpstream }> {
  const a = await createTestUpstream()
  const b = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, {
    auth: false,
    services: { a: { upstream: a.url, prefix: '/a', breaker: policy }, b: { upstream: b.url, prefix: '/b', breaker: policy } }
  })
  t.teardown(async () => { await app.close(); await a.close(); await b.close() })
  return { app, a, b }
}

async function openBreaker (app: FastifyInstance, upstream: TestUpstream, path: string): Promise<void> {
  upstream.respond(() => ({ status: 503 }))
  for (let i = 0; i < 4; i++) await app.inject({ url: path })
}

t.test('after the threshold: 503 fast with Retry-After, the upstream frozen', async (t) => {
  const { app, a } = await build(t)
  await openBreaker(app, a, '/a/x')
  const frozen = a.requests.length
  for (let i = 0; i < 10; i++) {
    const started = performance.now()
    const response = await app.inject({ url: '/a/x' })
    const elapsed = performance.now() - started
    t.equal(response.statusCode, 503)
    t.equal(response.json().code, 'GATEWAY_ERR_CIRCUIT_OPEN')
    t.match(response.headers['retry-after'], /^[1-9]\d*$/)
    t.ok(elapsed < 20, `answered in ${elapsed.toFixed(1)} ms`)
  }
  t.equal(a.requests.length, frozen, 'the upstream saw none of them')
  t.equal(app.gateway.breaker('a')?.state, 'open')
})

t.test('4xx answers do not open the breaker; timeouts and transport errors do', async (t) => {
  const { app, a } = await build(t)
  a.respond(() => ({ status: 404 }))
  for (let i = 0; i < 20; i++) t.equal((await app.inject({ url: '/a/x' })).statusCode, 404)
  t.equal(app.gateway.breaker('a')?.state, 'closed')
  a.respond(() => 'reset')
  // The 20 successes stay in the window: 30 resets make 60 % failures.
  for (let i = 0; i < 30; i++) await app.inject({ url: '/a/x' })
  t.equal(app.gateway.breaker('a')?.state, 'open', 'resets count')
})

t.test('service A failing does not open service B', async (t) => {
  const { app, a, b } = await build(t)
  await openBreaker(app, a, '/a/x')
  t.equal((await app.inject({ url: '/a/x' })).statusCode, 503)
  t.equal((await app.inject({ url: '/b/x' })).statusCode, 200)
  t.equal(app.gateway.breaker('b')?.state, 'closed')
  t.equal(b.requests.length, 1)
})

for (const outcome of ['success', 'failure'] as const) {
  t.test(`half-open: 20 concurrent requests → exactly one probe; ${outcome} ${outcome === 'success' ? 'closes' : 're-opens'}`, async (t) => {
    const { app, a } = await build(t)
    await openBreaker(app, a, '/a/x')
    await new Promise((resolve) => setTimeout(resolve, RESET_MS + 50))
    t.equal(app.gateway.breaker('a')?.state, 'half-open')
    const before = a.requests.length
    a.respond(() => (outcome === 'success' ? { status: 200, body: 'ok', delay: 50 } : { status: 500, delay: 50 }))
    const statuses = await Promise.all(Array.from({ length: 20 }, async () => (await app.inject({ url: '/a/probe' })).statusCode))
    t.equal(a.requests.length - before, 1, 'exactly one request reached the upstream')
    t.equal(statuses.filter((status) => status === 503).length, 19, 'the others failed fast')
    t.equal(statuses.filter((status) => status === (outcome === 'success' ? 200 : 500)).length, 1, 'the probe got the upstream\'s answer')
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(app.gateway.breaker('a')?.state, outcome === 'success' ? 'closed' : 'open')
  })
}

t.test('the team\'s own handlers use the same breaker', async (t) => {
  const { app, a } = await build(t)
  await openBreaker(app, a, '/a/x')
  let called = false
  const error = await app.gateway.breaker('a')?.run(async () => { called = true }).catch((err: unknown) => err)
  t.equal((error as { code?: string }).code, 'GATEWAY_CIRCUIT_OPEN')
  t.equal(called, false)
})

t.test('invalid breaker options are refused at registration', async (t) => {
  const app = Fastify()
  app.register(gateway, { auth: false, services: { a: { upstream: 'http://127.0.0.1:1', prefix: '/a', breaker: { errorThresholdPercentage: 0 } } } })
  await t.rejects(async () => { await app.ready() }, { code: 'GATEWAY_ERR_INVALID_OPTION', message: /services\.a\.breaker\.errorThresholdPercentage/ })
})

t.test('the process exits on its own after app.close(): no breaker timers left behind', async (t) => {
  const child = spawn(new URL('../../node_modules/.bin/node', import.meta.url).pathname, ['--import', '@tapjs/typescript/import', 'test/fixtures/close-exits.ts'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
  const [code, signal] = await once(child, 'exit')
  clearTimeout(timer)
  t.match(output, 'closed')
  t.equal(signal, null, 'not killed by the 20 s guard')
  t.equal(code, 0)
})

t.test('bulkhead: with a cap of 5 and a slow upstream, the 6th concurrent request gets 503 at once', async (t) => {
  const slow = await createTestUpstream()
  slow.respond(() => ({ status: 200, body: 'slow', delay: 400 }))
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: slow.url, prefix: '/s', maxConcurrent: 5 } } })
  t.teardown(async () => { await app.close(); await slow.close() })
  const inFlight = Array.from({ length: 5 }, async () => await app.inject({ url: '/s/x' }))
  await slow.waitForRequests(5)
  const started = performance.now()
  const sixth = await app.inject({ url: '/s/x' })
  t.ok(performance.now() - started < 50, `refused in ${(performance.now() - started).toFixed(1)} ms`)
  t.equal(sixth.statusCode, 503)
  t.equal(sixth.json().code, 'GATEWAY_ERR_SERVICE_BUSY')
  t.equal(sixth.headers['retry-after'], '1')
  t.same((await Promise.all(inFlight)).map((response) => response.statusCode), [200, 200, 200, 200, 200])
  t.equal(slow.requests.length, 5, 'the refused request never reached the upstream')
  t.equal((await app.inject({ url: '/s/x' })).statusCode, 200, 'the cap frees up as requests finish')
})

t.test('a static fallback replaces transport failures and an open breaker, never the upstream\'s own answers', async (t) => {
  const flaky = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, {
    auth: false,
    services: {
      down: { upstream: 'http://127.0.0.1:1', prefix: '/down', retries: 0, fallback: { status: 200, body: { items: [], stale: true } }, breaker: { volumeThreshold: 2, resetTimeout: '1m' } },
      flaky: { upstream: flaky.url, prefix: '/flaky', retries: 0, fallback: { status: 503, body: 'try later', headers: { 'retry-after': '5' } } }
    }
  })
  t.teardown(async () => { await app.close(); await flaky.close() })
  for (let i = 0; i < 4; i++) {
    const response = await app.inject({ url: '/down/items' })
    t.equal(response.statusCode, 200)
    t.same(response.json(), { items: [], stale: true })
    t.equal(response.headers['x-gateway-fallback'], '1')
  }
  t.equal(app.gateway.breaker('down')?.state, 'open', 'the breaker opened, and its refusals use the fallback too')
  flaky.failNext(1, { status: 503, body: 'upstream says busy' })
  const own = await app.inject({ url: '/flaky/x' })
  t.equal(own.body, 'upstream says busy', 'an upstream answer is never replaced')
  t.equal(own.headers['x-gateway-fallback'], undefined)
  flaky.failNext(1, 'reset')
  const reset = await app.inject({ url: '/flaky/x' })
  t.equal(reset.statusCode, 503)
  t.equal(reset.body, 'try later')
  t.equal(reset.headers['retry-after'], '5')
})

t.test('the failure list is configurable: e.g. 429 counts, 501 does not', async (t) => {
  const up = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: up.url, prefix: '/s', retries: 0, breaker: { volumeThreshold: 3, failureStatuses: [429, 503] } } } })
  t.teardown(async () => { await app.close(); await up.close() })
  up.respond(() => ({ status: 501 }))
  for (let i = 0; i < 10; i++) await app.inject({ url: '/s/x' })
  t.equal(app.gateway.breaker('s')?.state, 'closed', '501 is not in the list')
  up.respond(() => ({ status: 429 }))
  for (let i = 0; i < 20; i++) await app.inject({ url: '/s/x' })
  t.equal(app.gateway.breaker('s')?.state, 'open', '429 is')
})

t.test('several targets: a breaker per target; an open target is skipped while the others serve', async (t) => {
  const good = await createTestUpstream()
  const bad = await createTestUpstream()
  bad.respond(() => ({ status: 500 }))
  const logs: string[] = []
  const app = Fastify({ logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
  await app.register(gateway, { auth: false, services: { s: { upstream: [good.url, bad.url], prefix: '/s', retries: 0, ejection: false, breaker: { volumeThreshold: 2, resetTimeout: '1m' } } } })
  t.teardown(async () => { await app.close(); await good.close(); await bad.close() })
  for (let i = 0; i < 8; i++) await app.inject({ url: '/s/x' })
  t.equal(app.gateway.breaker('s', 1)?.state, 'open', 'the failing target\'s breaker opened')
  t.equal(app.gateway.breaker('s', 0)?.state, 'closed')
  const badBefore = bad.requests.length
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: '/s/x' })).statusCode, 200, 'served by the healthy target')
  t.equal(bad.requests.length, badBefore, 'the open target got nothing')
  t.notMatch(logs.join(''), `127.0.0.1:${bad.port}`, 'breaker logs name the target by position, not address')
  t.ok(logs.some((line) => line.includes('"target":1')))
})

t.test('a fallback upstream answers requests without a body when the service fails or its breaker is open', async (t) => {
  const backup = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, {
    auth: false,
    services: { s: { upstream: 'http://127.0.0.1:1', prefix: '/s', rewritePrefix: '/v1', retries: 0, fallback: { upstream: `${backup.url}/cache` }, breaker: { volumeThreshold: 2, resetTimeout: '1m' } } }
  })
  t.teardown(async () => { await app.close(); await backup.close() })
  for (let i = 0; i < 4; i++) {
    const response = await app.inject({ url: '/s/items?page=2' })
    t.equal(response.statusCode, 200)
    t.equal(response.headers['x-gateway-fallback'], '1')
  }
  t.equal(app.gateway.breaker('s')?.state, 'open', 'the open breaker\'s refusals use the fallback upstream too')
  t.equal(backup.requests.at(-1)?.url, '/cache/v1/items?page=2', 'same path and query under the fallback\'s base')
  const post = await app.inject({ method: 'POST', url: '/s/items', payload: { a: 1 } })
  t.equal(post.statusCode, 503, 'a request with a body cannot be replayed: the problem')
  t.equal(post.json().code, 'GATEWAY_ERR_CIRCUIT_OPEN')
})
