/**
 * The gateway as an app factory: build it here, listen in server.ts, call it with `app.inject` in
 * gateway.test.ts. Copy this file into your project and edit the services.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
// In your own project: import { gateway, gatewayServerOptions } from 'fastify-gateway'
import { gateway, gatewayServerOptions, type ApiKeyConsumer } from '../../lib/index.js'

/** Everything that differs between environments; the rest of the gateway is code. */
export interface GatewayConfig {
  /** Base URL of each upstream service; orders may list several, used round-robin. */
  upstreams: { users: string, orders: string[] | string, payments: string }
  /** Consumers by the SHA-256 hex digest of their API key (load them from your database instead with `lookup`). */
  apiKeys: Record<string, ApiKeyConsumer>
  /** HMAC secret (≥ 32 bytes) for Bearer JWTs with audience `minimal-gateway`; JWTs are off without it. */
  jwtSecret?: string
  /** Fastify logger options. Default: no logging. */
  logger?: FastifyServerOptions['logger']
  /** Proxies in front of the gateway whose `X-Forwarded-For` is trusted, e.g. `['10.0.0.0/8']`. */
  trustProxy?: FastifyServerOptions['trustProxy']
}

export async function buildGateway (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify({ logger: config.logger ?? false, trustProxy: config.trustProxy, ...gatewayServerOptions() })

  await app.register(gateway, {
    // Every route needs a credential unless it is listed here or marked `public` on the route.
    auth: {
      apiKeys: { keys: config.apiKeys },
      ...(config.jwtSecret === undefined ? {} : { jwt: { secret: config.jwtSecret, audience: 'minimal-gateway' } })
    },
    services: {
      users: { upstream: config.upstreams.users, prefix: '/api/v1/users' },
      orders: { upstream: config.upstreams.orders, prefix: '/api/v1/orders' },
      payments: { upstream: config.upstreams.payments, prefix: '/api/v1/payments', timeout: '10s', scopes: ['payments'] }
    }
  })

  // The team's own routes sit next to the proxied ones and pass through the same gateway hooks;
  // policy is declared on the route and type-checked.
  app.get('/health', { config: { gateway: { public: true } } }, async () => ({ ok: true }))
  app.get('/api/v1/me', async (request) => ({ id: request.consumer?.id, scopes: request.consumer?.scopes }))

  return app
}
