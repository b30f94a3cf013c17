/**
 * Runs the gateway: configuration from the environment, graceful shutdown on SIGTERM/SIGINT.
 * With no upstream URL configured, starts the demo upstreams in this process (`npm run demo`).
 *
 *   PORT (3000), HOST (127.0.0.1), LOG_LEVEL (info),
 *   USERS_URL, ORDERS_URLS (comma-separated), PAYMENTS_URL,
 *   DEMO_API_KEY (an API key accepted with every scope; default "demo-key-change-me"),
 *   JWT_ISSUER (your OpenID provider: RS256 Bearer tokens from its JWKS, audience "minimal-gateway"),
 *   JWT_SECRET (or, ≥ 32 bytes: HS256 Bearer tokens; the demo generates one and prints a token),
 *   METRICS_PORT (9464), METRICS_HOST (127.0.0.1; 0.0.0.0 in a container, off the ingress),
 *   CORS_ORIGINS (comma-separated exact origins; the demo allows http://localhost:5173)
 */
import { createHash, randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
// In your own project: import { closeGracefully } from 'fastify-gateway'
import { closeGracefully } from '../../lib/index.js'
import { AUDIENCE, buildGateway, type GatewayConfig } from './gateway.js'
import { signDemoToken, startDemoUpstreams, type DemoUpstreams } from './demo-upstreams.js'

// In-flight requests get this long after SIGTERM; keep it below the orchestrator's grace period
// (Kubernetes terminationGracePeriodSeconds, 30 s by default).
const SHUTDOWN_DEADLINE_MS = 10_000
const SHUTDOWN_HOOKS_MS = 5_000

function portFromEnv (name: string, fallback: number): number {
  const value = process.env[name]
  const port = Number(value ?? fallback)
  if (value === '' || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${name} must be 0–65535, got "${value}"`)
  return port
}

function listFromEnv (value: string | undefined): string[] {
  return (value ?? '').split(',').map((item) => item.trim()).filter((item) => item !== '')
}

/** All three upstreams from the environment, or none (then the demo ones): never a mix. */
async function resolveUpstreams (): Promise<{ upstreams: GatewayConfig['upstreams'], demo?: DemoUpstreams }> {
  const users = process.env.USERS_URL
  const orders = listFromEnv(process.env.ORDERS_URLS)
  const payments = process.env.PAYMENTS_URL
  if (users !== undefined && orders.length > 0 && payments !== undefined) return { upstreams: { users, orders, payments } }
  if (users !== undefined || orders.length > 0 || payments !== undefined) {
    throw new Error('set all of USERS_URL, ORDERS_URLS and PAYMENTS_URL, or none of them to use the demo upstreams')
  }
  const demo = await startDemoUpstreams()
  return { upstreams: demo.urls, demo }
}

function shutDownOnSignals (app: FastifyInstance, demo: DemoUpstreams | undefined): void {
  let closing = false
  function shutDown (signal: NodeJS.Signals): void {
    if (closing) {
      app.log.warn({ signal }, 'second signal, exiting now')
      process.exit(1)
    }
    closing = true
    app.log.info({ signal }, 'shutting down')
    // closeGracefully stops accepting, lets in-flight requests finish, cuts them off at the deadline,
    // then runs the onClose hooks (breakers, upstream pools). This backstop covers a hook that hangs.
    setTimeout(() => {
      app.log.error('shutdown did not complete, exiting')
      process.exit(1)
    }, SHUTDOWN_DEADLINE_MS + SHUTDOWN_HOOKS_MS).unref()
    closeGracefully(app, { deadline: SHUTDOWN_DEADLINE_MS })
      .then(async ({ forced }) => {
        if (forced) app.log.warn('shutdown deadline passed: requests still in flight were cut off')
        await demo?.close()
      })
      .then(() => process.exit(0), (err: unknown) => {
        app.log.error({ err }, 'shutdown failed')
        process.exit(1)
      })
  }
  process.on('SIGTERM', shutDown)
  process.on('SIGINT', shutDown)
}

/** JWT_ISSUER, else JWT_SECRET; the demo makes up a secret of its own so that it can print a token. */
function jwtFromEnv (demo: boolean): GatewayConfig['jwt'] {
  const { JWT_ISSUER: issuer, JWT_SECRET: secret } = process.env
  if (issuer !== undefined && secret !== undefined) throw new Error('set JWT_ISSUER or JWT_SECRET, not both')
  if (issuer !== undefined) return { issuer }
  if (secret !== undefined) return { secret }
  return demo ? { secret: randomBytes(32).toString('base64url') } : undefined
}

/** A host to print in a URL: a wildcard address as loopback, IPv6 in brackets. */
function shownHost (host: string): string {
  return host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
}

async function main (): Promise<void> {
  const port = portFromEnv('PORT', 3000)
  const host = process.env.HOST ?? '127.0.0.1'
  const { upstreams, demo } = await resolveUpstreams()
  const apiKey = process.env.DEMO_API_KEY ?? 'demo-key-change-me'
  // Keys are configured by digest, never in clear.
  const apiKeys = { [createHash('sha256').update(apiKey).digest('hex')]: { id: 'demo-client', scopes: ['payments', 'reports:read'] } }
  const jwt = jwtFromEnv(demo !== undefined)
  const corsOrigins = listFromEnv(process.env.CORS_ORIGINS)
  const app = await buildGateway({
    upstreams,
    apiKeys,
    jwt,
    metrics: { port: portFromEnv('METRICS_PORT', 9464), host: process.env.METRICS_HOST },
    corsOrigins: corsOrigins.length > 0 || demo === undefined ? corsOrigins : ['http://localhost:5173'],
    // The demo counts in memory; for several instances pass a Redis client as `rateLimitStore`.
    logger: { level: process.env.LOG_LEVEL ?? 'info' }
  })
  shutDownOnSignals(app, demo)
  await app.listen({ port, host })

  const bound = (app.server.address() as AddressInfo).port
  const base = `http://${shownHost(host)}:${bound}`
  console.log(`fastify-gateway example listening on ${base}${demo === undefined ? '' : ' (demo upstreams)'}`)
  console.log('try:')
  const key = `-H 'x-api-key: ${apiKey}'`
  console.log(`  curl -i ${base}/health                         # public`)
  console.log(`  curl -i ${base}/api/v1/users/1                 # 401: no credential`)
  console.log(`  curl -i ${key} ${base}/api/v1/users/1`)
  console.log(`  curl -i ${key} -H 'x-request-id: my-trace-1' '${base}/api/v1/users?page=2'`)
  console.log(`  curl -i ${key} ${base}/api/v1/orders   # twice: orders-1, then orders-2`)
  console.log(`  curl -i ${key} ${base}/api/v1/me`)
  console.log(`  curl -i ${key} -H 'x-tenant: acme' ${base}/api/v1/reports/daily   # without x-tenant: 400`)
  if (jwt !== undefined && 'secret' in jwt && process.env.JWT_SECRET === undefined) {
    const token = signDemoToken(jwt.secret, { sub: 'demo-user', aud: AUDIENCE, scope: 'reports:read', exp: Math.floor(Date.now() / 1000) + 3600 })
    console.log(`  curl -i -H 'authorization: Bearer ${token}' ${base}/api/v1/me`)
  }
  const metrics = app.gatewayMetrics.address()
  if (metrics !== null) console.log(`  curl -s http://${shownHost(metrics.address)}:${metrics.port}/metrics | grep gateway_requests_total   # internal listener only`)
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
