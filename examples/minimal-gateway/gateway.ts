/**
 * The gateway as an app factory: build it here, listen in server.ts, call it with `app.inject` in
 * gateway.test.ts and policy.test.ts. Copy this file into your project and edit the services.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
// In your own project: import { gateway, gatewayServerOptions, … } from 'fastify-gateway'
import { gateway, gatewayServerOptions, type ApiKeyConsumer, type GatewayServerOptions, type RateLimitRedisClient } from '../../lib/index.js'
import { requireTenant, TENANT_HEADER } from './policies.js'

/** The `aud` every Bearer JWT must carry. */
export const AUDIENCE = 'minimal-gateway'

/** Rate limits, per consumer (per client address when anonymous); the strictest one decides. */
export const RATE_LIMITS = {
  /** Across every route of the gateway. */
  perConsumer: { max: 300, window: '1m' },
  /** On the payments service, on top of the above. */
  payments: { max: 30, window: '1m' }
} as const

/** What the users service answers while it is down or its breaker is open. */
export const USERS_FALLBACK = { users: [], degraded: true }

/** Everything that differs between environments; the rest of the gateway is code. */
export interface GatewayConfig {
  /** Base URL of each upstream service; orders may list several, used round-robin. */
  upstreams: { users: string, orders: string[] | string, payments: string }
  /** Consumers by the SHA-256 hex digest of their API key (load them from your database instead with `lookup`). */
  apiKeys: Record<string, ApiKeyConsumer>
  /**
   * Bearer JWTs with audience `minimal-gateway`: your identity provider's issuer (keys from its
   * JWKS, RS256), or an HMAC secret of at least 32 bytes (HS256). JWTs are refused without it.
   */
  jwt?: { issuer: string } | { secret: string }
  /** Where Prometheus scrapes `/metrics`: a separate listener, never the public port (0: any free port). */
  metrics: { port: number, host?: string }
  /** Browser origins allowed to call the gateway, exactly (`https://app.example.com`). None: no CORS. */
  corsOrigins?: readonly string[]
  /** Shared rate-limit counters (an ioredis `Redis` or `Cluster`, created and closed by you). Default: in memory. */
  rateLimitStore?: RateLimitRedisClient
  /** Logger options (`true` or pino options); credentials are redacted from every line. Default: no logging. */
  logger?: GatewayServerOptions['logger']
  /** Proxies in front of the gateway whose `X-Forwarded-For` is trusted, e.g. `['10.0.0.0/8']`. */
  trustProxy?: FastifyServerOptions['trustProxy']
}

export async function buildGateway (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify({ trustProxy: config.trustProxy, ...gatewayServerOptions({ logger: config.logger }) })
  const corsOrigins = config.corsOrigins ?? []

  await app.register(gateway, {
    // Every route needs a credential unless it is listed in `public` or marked `public` on the route.
    auth: {
      apiKeys: { keys: config.apiKeys },
      ...(config.jwt === undefined ? {} : { jwt: { ...config.jwt, audience: AUDIENCE } })
    },
    rateLimit: { perConsumer: RATE_LIMITS.perConsumer, store: config.rateLimitStore },
    // Preflights are answered before auth; other origins get no Access-Control-* header at all.
    ...(corsOrigins.length === 0
      ? {}
      : { cors: { origins: corsOrigins, allowedHeaders: ['authorization', 'content-type', 'x-api-key', TENANT_HEADER], exposedHeaders: ['x-request-id', 'retry-after', 'ratelimit', 'ratelimit-policy'] } }),
    metrics: { expose: config.metrics },
    services: {
      // A read-only directory: while it is down (or its breaker is open) an empty, flagged list is a
      // better answer than a 503. Reads only, so that a write never gets a made-up success.
      users: {
        upstream: config.upstreams.users,
        prefix: '/api/v1/users',
        methods: ['GET', 'HEAD'],
        breaker: { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeout: '10s' },
        fallback: { status: 200, body: USERS_FALLBACK, headers: { 'cache-control': 'no-store' } }
      },
      orders: { upstream: config.upstreams.orders, prefix: '/api/v1/orders' },
      // Money moves here: a tight limit, never retried, and no fallback (a failure must look like one).
      payments: {
        upstream: config.upstreams.payments,
        prefix: '/api/v1/payments',
        timeout: '10s',
        retries: 0,
        scopes: ['payments'],
        rateLimit: RATE_LIMITS.payments
      }
    }
  })

  // The team's own routes sit next to the proxied ones and pass through the same gateway hooks;
  // policy is declared on the route and type-checked.
  app.get('/health', { config: { gateway: { public: true, rateLimit: false } } }, async () => ({ ok: true }))
  app.get('/api/v1/me', async (request) => ({ id: request.consumer?.id, scopes: request.consumer?.scopes }))
  // Needs the `reports:read` scope (403 otherwise, checked by the gateway) and an x-tenant header
  // (checked by the team's own hook, after auth).
  app.get<{ Params: { name: string } }>('/api/v1/reports/:name', {
    config: { gateway: { scopes: ['reports:read'] } },
    onRequest: requireTenant
  }, async (request) => ({ report: request.params.name, tenant: request.headers[TENANT_HEADER], consumer: request.consumer?.id }))

  return app
}
