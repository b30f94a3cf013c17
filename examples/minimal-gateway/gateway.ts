/**
 * The gateway as an app factory: build it here, listen in server.ts, call it with `app.inject` in
 * gateway.test.ts. Copy this file into your project and edit the services.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
// In your own project: import { gateway, gatewayServerOptions } from 'fastify-gateway'
import { gateway, gatewayServerOptions } from '../../lib/index.js'

/** Everything that differs between environments; the rest of the gateway is code. */
export interface GatewayConfig {
  /** Base URL of each upstream service; orders may list several, used round-robin. */
  upstreams: { users: string, orders: string[] | string, payments: string }
  /** Fastify logger options. Default: no logging. */
  logger?: FastifyServerOptions['logger']
  /** Proxies in front of the gateway whose `X-Forwarded-For` is trusted, e.g. `['10.0.0.0/8']`. */
  trustProxy?: FastifyServerOptions['trustProxy']
}

export async function buildGateway (config: GatewayConfig): Promise<FastifyInstance> {
  const app = Fastify({ logger: config.logger ?? false, trustProxy: config.trustProxy, ...gatewayServerOptions() })

  await app.register(gateway, {
    services: {
      users: { upstream: config.upstreams.users, prefix: '/api/v1/users' },
      orders: { upstream: config.upstreams.orders, prefix: '/api/v1/orders' },
      payments: { upstream: config.upstreams.payments, prefix: '/api/v1/payments', timeout: '10s' }
    }
  })

  // The team's own routes sit next to the proxied ones and pass through the same gateway hooks.
  app.get('/health', async () => ({ ok: true }))

  return app
}
