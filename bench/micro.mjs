// In-process A/B of the gateway's CPU cost per request, for optimisation work between full runs:
// each candidate app is driven with fastify.inject (no client sockets), the upstream runs in its own
// process, and the candidate's CPU time (process.cpuUsage) is divided by requests. Rounds are
// interleaved and the minimum is kept, which is what survives a noisy shared machine best.
//   node bench/micro.mjs [rounds] [requests per round]
import { spawn } from 'node:child_process'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'

const ROUNDS = Number(process.argv[2] ?? 5)
const REQUESTS = Number(process.argv[3] ?? 3000)
const SECRET = 'bench-secret-bench-secret-bench-secret-42'
const token = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'bench-user', aud: 'bench', exp: Math.floor(Date.now() / 1000) + 3600 })

const upstream = spawn(process.execPath, ['bench/upstream.mjs'], { stdio: ['ignore', 'pipe', 'inherit'] })
const port = await new Promise((resolve) => upstream.stdout.on('data', (data) => { const m = /ready (\d+)/.exec(String(data)); if (m) resolve(Number(m[1])) }))
const base = `http://127.0.0.1:${port}`
const { gateway } = await import('../dist/esm/index.js')

async function replyFromApp () {
  const app = Fastify()
  await app.register((await import('@fastify/reply-from')).default, { base })
  app.all('/api/*', (request, reply) => reply.from(request.url.slice(4)))
  return app
}
async function gatewayApp (options) {
  const app = Fastify()
  await app.register(gateway, { services: { api: { upstream: base, prefix: '/api', ...options.service } }, ...options.gateway })
  return app
}
const only = process.env.ONLY?.split(',')
const all = {
  'reply-from': { app: await replyFromApp(), headers: {} },
  'gateway-proxy': { app: await gatewayApp({ gateway: { auth: false, rateLimit: false } }), headers: {} },
  'proxy-no-breaker': { app: await gatewayApp({ gateway: { auth: false, rateLimit: false }, service: { breaker: false } }), headers: {} },
  'proxy-no-retry': { app: await gatewayApp({ gateway: { auth: false, rateLimit: false }, service: { retries: 0 } }), headers: {} },
  'proxy-bare': { app: await gatewayApp({ gateway: { auth: false, rateLimit: false, accessLog: false }, service: { retries: 0, breaker: false } }), headers: {} },
  'gateway-full': {
    app: await gatewayApp({
      gateway: { auth: { jwt: { secret: SECRET, audience: 'bench' } }, rateLimit: { perConsumer: { max: 1e9, window: '1m' } }, metrics: { expose: false } },
      service: { rateLimit: { max: 1e9, window: '1m' } }
    }),
    headers: { authorization: `Bearer ${token}` }
  }
}

const candidates = Object.fromEntries(Object.entries(all).filter(([name]) => only === undefined || only.includes(name)))

async function drive ({ app, headers }, count) {
  for (let i = 0; i < count; i += 20) {
    await Promise.all(Array.from({ length: 20 }, async () => {
      const response = await app.inject({ url: '/api/small', headers })
      if (response.statusCode !== 200) throw new Error(`status ${response.statusCode}: ${response.body}`)
    }))
  }
}

const best = {}
for (const candidate of Object.values(candidates)) await drive(candidate, 2000)
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, candidate] of Object.entries(candidates)) {
    const before = process.cpuUsage()
    await drive(candidate, REQUESTS)
    const used = process.cpuUsage(before)
    const us = (used.user + used.system) / REQUESTS
    best[name] = Math.min(best[name] ?? Infinity, us)
  }
}
for (const [name, us] of Object.entries(best)) console.log(`${name.padEnd(14)} ${us.toFixed(1)} µs/req   ${(best['reply-from'] === undefined ? NaN : us / best['reply-from']).toFixed(2)} × reply-from`)
for (const { app } of Object.values(candidates)) await app.close()
upstream.kill()
