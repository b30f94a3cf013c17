/**
 * The umbrella plugin: the only place that knows the order in which the gateway's plugins are
 * registered (docs/design.md § Request flow).
 */
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { optionalObject, rejectUnknownKeys } from './internal/options.js'
import { correlationId, type CorrelationIdOptions } from './plugins/correlation-id.js'
import { proxy } from './plugins/proxy.js'
import { requestGuard } from './plugins/request-guard.js'
import type { GatewayServiceOptions } from './types.js'

/** Options of the {@link gateway} umbrella plugin. */
export interface GatewayOptions {
  /** Request id header handling (see {@link correlationId}). */
  correlationId?: CorrelationIdOptions
  /** Extra headers only the gateway may set; `x-consumer-id` and `x-consumer-scopes` always are. */
  identityHeaders?: string[]
  /** Upstream services by name (see {@link proxy}). */
  services?: Record<string, GatewayServiceOptions>
}

const gatewayPlugin: FastifyPluginAsync<GatewayOptions> = async function gateway (fastify, input) {
  const options = optionalObject(input, '')
  rejectUnknownKeys(options, ['correlationId', 'identityHeaders', 'services'], '')
  const idOptions = optionalObject(options.correlationId, 'correlationId') as CorrelationIdOptions

  await fastify.register(correlationId, idOptions)
  await fastify.register(requestGuard, { identityHeaders: options.identityHeaders as string[] | undefined })
  if (options.services !== undefined) {
    await fastify.register(proxy, {
      services: options.services as Record<string, GatewayServiceOptions>,
      requestIdHeader: idOptions.header
    })
  }
}

/**
 * Registers the gateway's plugins in their one correct order: correlation id, request guard, proxy.
 *
 * @example
 * ```ts
 * const app = Fastify({ logger: true, genReqId: requestIdGenerator() })
 * await app.register(gateway, {
 *   services: { users: { upstream: 'http://users:8001', prefix: '/api/v1/users' } }
 * })
 * ```
 */
export const gateway = fp(gatewayPlugin, { fastify: '5.x', name: 'fastify-gateway' })
