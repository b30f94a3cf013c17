// One benchmark candidate, in its own process on 127.0.0.1. Prints "ready <port>".
//   node bench/candidate.mjs <direct|reply-from|reply-from-2|http-proxy|gateway-proxy|gateway-auth|gateway-full|gateway-full-redis>
// UPSTREAM (http://127.0.0.1:<port>), REDIS_URL, JWKS_ISSUER, JWKS_URI, HMAC_SECRET come from the runner.
import { createHash } from 'node:crypto'
import Fastify from 'fastify'

const kind = process.argv[2]
const upstream = process.env.UPSTREAM
const apiKeyDigest = createHash('sha256').update('bench-key').digest('hex')
const listen = async (app) => {
  await app.listen({ port: 0, host: '127.0.0.1' })
  console.log(`ready ${app.server.address().port}`)
  process.on('SIGTERM', () => app.close().then(() => process.exit(0)))
}

async function gatewayApp (extra) {
  const { gateway, gatewayServerOptions } = await import('../dist/esm/index.js')
  // BENCH_LOG=1 shows the candidate's log on stderr (e.g. to see why requests fail).
  const app = Fastify({ logger: process.env.BENCH_LOG ? { level: 'info', stream: process.stderr } : false, ...gatewayServerOptions() })
  // GATEWAY_EXTRA (JSON) is merged into the gateway options: A/B experiments such as {"accessLog":false}.
  await app.register(gateway, { ...extra(upstream), ...JSON.parse(process.env.GATEWAY_EXTRA ?? '{}') })
  return app
}

const limits = (store) => ({
  ...(store === undefined ? {} : { store }),
  perConsumer: { max: 1e9, window: '1m' }
})
// SERVICE_EXTRA (JSON) is merged into the service: A/B experiments such as {"breaker":false}.
const service = (rateLimit) => ({ api: { upstream, prefix: '/api', ...(rateLimit ? { rateLimit: { max: 1e9, window: '1m' } } : {}), ...JSON.parse(process.env.SERVICE_EXTRA ?? '{}') } })
async function redisClient () {
  const { Redis } = await import('ioredis')
  // Auto-pipelining is optional (docs/rate-limit.md): the gateway batches its own script calls per turn.
  // AUTO_PIPELINING=0 turns it off (A/B experiments).
  const client = new Redis(process.env.REDIS_URL, { enableOfflineQueue: true, enableAutoPipelining: process.env.AUTO_PIPELINING !== '0', commandTimeout: 500, maxRetriesPerRequest: 1 })
  await new Promise((resolve) => client.once('ready', resolve))
  return client
}
// The recommended setup: metrics on a listener of their own (nothing scrapes it during the load).
// NO_METRICS=1 leaves metrics out (A/B experiments).
const fullMetrics = process.env.NO_METRICS ? undefined : { expose: { port: 0 } }
const fullAuth = {
  jwt: {
    secret: process.env.HMAC_SECRET,
    audience: 'bench',
    issuers: [{ issuer: process.env.JWKS_ISSUER, jwksUri: process.env.JWKS_URI, audience: 'bench' }]
  },
  apiKeys: { keys: { [apiKeyDigest]: { id: 'bench-client' } } }
}

switch (kind) {
  case 'direct':
    // No candidate process: the load goes straight to the upstream.
    console.log(`ready ${new URL(upstream).port}`)
    break
  case 'reply-from':
  case 'reply-from-2': { // the A/A control: a second process of the same code
    const app = Fastify({ logger: false })
    await app.register((await import('@fastify/reply-from')).default, { base: upstream })
    app.removeAllContentTypeParsers()
    app.addContentTypeParser('*', (_req, payload, done) => done(null, payload))
    app.all('/api/*', (request, reply) => reply.from(request.url.slice(4)))
    await listen(app)
    break
  }
  case 'http-proxy': {
    const app = Fastify({ logger: false })
    await app.register((await import('@fastify/http-proxy')).default, { upstream, prefix: '/api' })
    await listen(app)
    break
  }
  case 'gateway-proxy':
    await listen(await gatewayApp(() => ({ auth: false, rateLimit: false, services: service(false) })))
    break
  case 'gateway-auth':
    await listen(await gatewayApp(() => ({ auth: fullAuth, rateLimit: false, services: service(false) })))
    break
  case 'gateway-full':
    await listen(await gatewayApp(() => ({ auth: fullAuth, rateLimit: limits(), services: service(true), metrics: fullMetrics })))
    break
  case 'gateway-full-redis': {
    const store = await redisClient()
    await listen(await gatewayApp(() => ({ auth: fullAuth, rateLimit: limits(store), services: service(true), metrics: fullMetrics })))
    break
  }
  default:
    console.error(`unknown candidate ${kind}`)
    process.exit(2)
}
