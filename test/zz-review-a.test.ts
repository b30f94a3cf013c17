import t from 'tap'
import Fastify from 'fastify'
import { gateway, gatewayServerOptions } from '../lib/index.js'
import { createTestUpstream } from '../lib/testing/index.js'
import { hs256, SECRET } from './helpers/tokens.js'

t.test('child context registered before gateway', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  app.register(async (child) => { child.get('/admin', async () => ({ secret: 'yes' })) })
  app.get('/root-before', async () => ({ secret: 'root' }))
  await app.register(gateway, { auth: { jwt: { secret: SECRET } } })
  app.get('/after', async () => ({ secret: 'after' }))
  t.teardown(() => app.close())
  for (const url of ['/admin', '/root-before', '/after']) {
    const r = await app.inject({ url })
    t.comment(url, r.statusCode, r.body)
  }
})

t.test('rate-limit 429 with async onSend still reaches upstream', async (t) => {
  const up = await createTestUpstream()
  t.teardown(() => up.close())
  const app = Fastify({ ...gatewayServerOptions() })
  app.addHook('onSend', async (_req, _reply, payload) => payload)
  await app.register(gateway, {
    auth: false,
    rateLimit: { perConsumer: { max: 1, window: '1m' } },
    services: { s: { upstream: up.url, prefix: '/s' } }
  })
  t.teardown(() => app.close())
  for (let i = 0; i < 3; i++) {
    const r = await app.inject({ method: 'POST', url: '/s/x', payload: 'hello', headers: { 'content-type': 'text/plain' } })
    t.comment('status', r.statusCode)
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.comment('upstream received', up.requests.length)
})

t.test('Expect: 100-continue POST', async (t) => {
  const up = await createTestUpstream()
  t.teardown(() => up.close())
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: false, services: { s: { upstream: up.url, prefix: '/s' } } })
  t.teardown(() => app.close())
  const r = await app.inject({ method: 'POST', url: '/s/x', payload: 'x'.repeat(2000), headers: { 'content-type': 'text/plain', expect: '100-continue' } })
  t.comment('expect status', r.statusCode, r.body)
  const r2 = await app.inject({ method: 'POST', url: '/s/x', payload: 'hello' })
  t.comment('no content-type status', r2.statusCode, r2.body)
  const r3 = await app.inject({ method: 'POST', url: '/s/x', payload: 'hello', headers: { 'content-type': 'application/json' } })
  t.comment('json status', r3.statusCode, r3.body)
})

t.test('optional auth with malformed Authorization', async (t) => {
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: { jwt: { secret: SECRET } } })
  app.get('/opt', { config: { gateway: { auth: 'optional' } } }, async (req) => ({ c: req.consumer }))
  t.teardown(() => app.close())
  for (const authz of ['Bearer bad token!', 'Basic Zm9vOmJhcg==', 'Bearer ' + hs256({}, 'x'.repeat(40))]) {
    const r = await app.inject({ url: '/opt', headers: { authorization: authz } })
    t.comment(authz.slice(0, 20), r.statusCode, r.body)
  }
})
