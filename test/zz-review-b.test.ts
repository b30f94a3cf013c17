import t from 'tap'
import Fastify from 'fastify'
import { gateway, gatewayServerOptions } from '../lib/index.js'
import { createTestUpstream } from '../lib/testing/index.js'

t.test('rate-limit 429 with slow async onSend', async (t) => {
  const up = await createTestUpstream()
  t.teardown(() => up.close())
  const app = Fastify({ ...gatewayServerOptions() })
  app.addHook('onSend', async (_req, _reply, payload) => { await new Promise((resolve) => setTimeout(resolve, 5)); return payload })
  await app.register(gateway, {
    auth: false,
    rateLimit: { perConsumer: { max: 1, window: '1m' } },
    services: { s: { upstream: up.url, prefix: '/s' } }
  })
  t.teardown(() => app.close())
  for (let i = 0; i < 3; i++) {
    const r = await app.inject({ method: 'POST', url: '/s/x', payload: 'hello', headers: { 'content-type': 'text/plain' } })
    t.comment('status', r.statusCode, r.body.slice(0, 80))
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.comment('upstream received', up.requests.length)
})
