// Several targets per service: round robin with passive health (SECURITY.md § H).
import t from 'tap'
import Fastify from 'fastify'
import { gateway } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { freePort } from '../../lib/testing/ports.js'

t.test('two targets, one down: after a few failures every request succeeds', async (t) => {
  const up = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, {
    auth: false,
    services: { s: { upstream: [up.url, `http://127.0.0.1:${await freePort()}`], prefix: '/s', retries: 0, breaker: false, ejection: { failures: 2, baseTime: '1m' } } }
  })
  t.teardown(async () => { await app.close(); await up.close() })
  const statuses: number[] = []
  for (let i = 0; i < 20; i++) statuses.push((await app.inject({ url: '/s/x' })).statusCode)
  const failures = statuses.filter((status) => status !== 200).length
  t.ok(failures <= 2, `${failures} failed before the down target was ejected`)
  t.same(statuses.slice(-10), Array(10).fill(200), 'then every request succeeds')
})

t.test('the ejected target is tried again after its ejection time and taken back when healthy', async (t) => {
  const a = await createTestUpstream()
  const b = await createTestUpstream()
  const app = Fastify()
  await app.register(gateway, {
    auth: false,
    services: { s: { upstream: [a.url, b.url], prefix: '/s', retries: 0, breaker: false, ejection: { failures: 2, baseTime: 300, maxTime: '1s' } } }
  })
  t.teardown(async () => { await app.close(); await a.close(); await b.close() })
  b.respond(() => ({ status: 503 }))
  for (let i = 0; i < 6; i++) await app.inject({ url: '/s/x' })
  const bBefore = b.requests.length
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: '/s/x' })).statusCode, 200, 'b is ejected: only a answers')
  t.equal(b.requests.length, bBefore)
  b.respond(() => undefined) // healthy again
  await new Promise((resolve) => setTimeout(resolve, 350))
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: '/s/x' })).statusCode, 200)
  t.ok(b.requests.length - bBefore >= 2, 'b was tried again and taken back')
})

t.test('when every target is failing, all are still used (never all ejected)', async (t) => {
  const a = await createTestUpstream()
  const b = await createTestUpstream()
  a.respond(() => ({ status: 503 }))
  b.respond(() => ({ status: 503 }))
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: [a.url, b.url], prefix: '/s', retries: 0, breaker: false, ejection: { failures: 1, baseTime: '1m' } } } })
  t.teardown(async () => { await app.close(); await a.close(); await b.close() })
  for (let i = 0; i < 10; i++) t.equal((await app.inject({ url: '/s/x' })).statusCode, 503, 'the upstream\'s answer, not a gateway refusal')
  t.equal(a.requests.length + b.requests.length, 10)
})

t.test('active health checks: a target failing its check gets no traffic until it passes again', async (t) => {
  const a = await createTestUpstream()
  const b = await createTestUpstream()
  let bHealthy = false
  b.respond((request) => request.url === '/healthz' ? { status: bHealthy ? 200 : 503 } : undefined)
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: [a.url, b.url], prefix: '/s', healthCheck: { path: '/healthz', interval: 100 } } } })
  t.teardown(async () => { await app.close(); await a.close(); await b.close() })
  const served = (upstream: typeof b) => upstream.requests.filter((request) => request.url !== '/healthz').length
  await new Promise((resolve) => setTimeout(resolve, 150))
  for (let i = 0; i < 6; i++) t.equal((await app.inject({ url: '/s/x' })).statusCode, 200)
  t.equal(served(b), 0, 'the unhealthy target got no traffic')
  bHealthy = true
  await new Promise((resolve) => setTimeout(resolve, 250))
  for (let i = 0; i < 6; i++) await app.inject({ url: '/s/x' })
  t.ok(served(b) >= 2, `taken back after a passing check (${served(b)} requests)`)
})
