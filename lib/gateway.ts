/**
 * The umbrella plugin: the only place that knows the order in which the gateway's plugins are
 * registered (docs/design.md § Request flow).
 */
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError } from './errors.js'
import { assertRoutePolicyShape, identityHeaderNames, resolveAuthOptions } from './internal/auth-options.js'
import { RESERVED_HEADERS } from './internal/headers.js'
import { headerName, optionalObject, rejectUnknownKeys, stringList } from './internal/options.js'
import { accessLog, type AccessLogOptions } from './plugins/access-log.js'
import { auth } from './plugins/auth.js'
import { breaker } from './plugins/breaker.js'
import { correlationId, type CorrelationIdOptions } from './plugins/correlation-id.js'
import { cors, type CorsOptions } from './plugins/cors.js'
import { health, type HealthOptions } from './plugins/health.js'
import { metrics, type MetricsOptions } from './plugins/metrics.js'
import { proxy } from './plugins/proxy.js'
import { rateLimit } from './plugins/rate-limit.js'
import { requestGuard } from './plugins/request-guard.js'
import type { AuthOptions, GatewayServiceOptions, RateLimitOptions } from './types.js'

/**
 * Options of the {@link gateway} umbrella plugin.
 *
 * @example
 * ```ts
 * const options: GatewayOptions = {
 *   auth: { jwt: { issuer: 'https://id.example.com/', audience: 'orders-api' }, public: ['GET /api/v1/status'] },
 *   rateLimit: { perConsumer: { max: 100, window: '1m' } },
 *   metrics: { expose: { port: 9464 } },
 *   health: true,
 *   services: { orders: { upstream: 'http://orders:8002', prefix: '/api/v1/orders' } }
 * }
 * await app.register(gateway, options)
 * ```
 */
export interface GatewayOptions {
  /** Request id header handling (see {@link correlationId}). */
  correlationId?: CorrelationIdOptions
  /** CORS (see {@link cors}); preflight is answered before auth. Off when absent. */
  cors?: CorsOptions
  /**
   * Edge auth (see {@link auth}): every route needs a credential unless it is public. Required:
   * pass `false` to run without authentication (e.g. behind another authenticating proxy).
   */
  auth: AuthOptions | false
  /**
   * Rate limits (see {@link rateLimit}): per consumer here, per service in `services`, per route in
   * `config.gateway.rateLimit`. Counted in memory unless `store` is given. `false` removes the plugin.
   */
  rateLimit?: RateLimitOptions | false
  /** Extra headers only the gateway may set; `x-consumer-id` and `x-consumer-scopes` always are. */
  identityHeaders?: string[]
  /** Upstream services by name (see {@link proxy}). */
  services?: Record<string, GatewayServiceOptions>
  /** Prometheus metrics (see {@link metrics}). Off when absent. */
  metrics?: MetricsOptions
  /** One structured line per request, credentials censored (see {@link accessLog}). On by default; `false` removes it. */
  accessLog?: AccessLogOptions | false
  /** `/health` and `/ready` for load balancers and probes (see {@link health}); `true` for the defaults. Off when absent. */
  health?: HealthOptions | boolean
}

const gatewayPlugin: FastifyPluginAsync<GatewayOptions> = async function gateway (fastify, input) {
  const options = optionalObject(input, '')
  rejectUnknownKeys(options, ['correlationId', 'cors', 'auth', 'rateLimit', 'identityHeaders', 'services', 'metrics', 'accessLog', 'health'], '')
  const idOptions = optionalObject(options.correlationId, 'correlationId') as CorrelationIdOptions
  // Secure by default: leaving auth out is a boot error, not an open gateway.
  if (options.auth === undefined) throw new InvalidOptionError('auth', 'configure auth, or pass `auth: false` to run without authentication')
  const authOptions = options.auth === false ? undefined : options.auth as AuthOptions
  const identityHeaders = [
    ...stringList(options.identityHeaders, 'identityHeaders').map((name, i) => {
      const header = headerName(name, `identityHeaders[${i}]`)
      if (RESERVED_HEADERS.has(header)) throw new InvalidOptionError(`identityHeaders[${i}]`, `"${header}" is reserved (framing, forwarding or credentials)`)
      return header
    }),
    ...(authOptions === undefined ? [] : identityHeaderNames(resolveAuthOptions(authOptions)))
  ]

  // First, so that its timer starts before any other hook and every answer is timed, the guard's 400s included.
  if (options.metrics !== undefined) await fastify.register(metrics, options.metrics as MetricsOptions)
  await fastify.register(correlationId, idOptions)
  await fastify.register(requestGuard, { identityHeaders })
  if (options.accessLog !== false) {
    const accessLogOptions = optionalObject(options.accessLog, 'accessLog') as AccessLogOptions
    const keyParameter = authOptions?.apiKeys?.query
    await fastify.register(accessLog, typeof keyParameter === 'string'
      ? { ...accessLogOptions, redactQuery: [...stringList(accessLogOptions.redactQuery, 'accessLog.redactQuery'), keyParameter] }
      : accessLogOptions)
  }
  if (options.cors !== undefined) await fastify.register(cors, options.cors as CorsOptions)
  if (authOptions !== undefined) await fastify.register(auth, authOptions)
  else fastify.decorateRequest('consumer', null)
  // Always registered (unless false): a limit declared on a service or route is never silently ignored.
  if (options.rateLimit !== false) await fastify.register(rateLimit, (options.rateLimit ?? {}) as RateLimitOptions)
  if (authOptions === undefined || options.rateLimit === false) {
    // A policy declared for a plugin that is switched off would be silently ignored: refuse it.
    fastify.addHook('onRoute', function refusePolicyWithoutPlugin (route) {
      const policy = route.config?.gateway
      // With auth on, the auth plugin checks the shape; without it, this hook does.
      if (authOptions === undefined) assertRoutePolicyShape(policy, route.url)
      if (authOptions === undefined && ((policy?.scopes !== undefined && policy.scopes.length > 0) || policy?.auth !== undefined)) {
        throw new InvalidOptionError(`config.gateway of ${route.url}`, 'declares scopes or an auth mode, but the gateway runs with auth: false')
      }
      if (options.rateLimit === false && typeof policy?.rateLimit === 'object') {
        throw new InvalidOptionError(`config.gateway of ${route.url}.rateLimit`, 'declares a limit, but the gateway runs with rateLimit: false')
      }
    })
  }
  // A breaker per service unless `breaker: false`, validated by the breaker plugin; registered even
  // without services so that `fastify.gateway` always exists for the team's own code.
  const services = optionalObject(options.services, 'services')
  await fastify.register(breaker, {
    services: Object.fromEntries(Object.entries(services).map(([name, service]) => [name, (service as GatewayServiceOptions)?.breaker ?? {}]))
  })
  if (options.services !== undefined) {
    await fastify.register(proxy, {
      services: options.services as Record<string, GatewayServiceOptions>,
      requestIdHeader: idOptions.header
    })
  }
  if (options.health !== undefined && options.health !== false) {
    await fastify.register(health, options.health === true ? {} : options.health as HealthOptions)
  }
}

/**
 * Registers the gateway's plugins in their one correct order: metrics, correlation id, request guard,
 * access log, CORS, auth, rate limit, breaker, proxy, health.
 *
 * @example
 * ```ts
 * const app = Fastify({ logger: true, ...gatewayServerOptions() })
 * await app.register(gateway, {
 *   auth: { jwt: { issuer: 'https://id.example.com/', audience: 'users-api' }, public: ['GET /health'] },
 *   services: { users: { upstream: 'http://users:8001', prefix: '/api/v1/users' } }
 * })
 * ```
 */
export const gateway = fp(gatewayPlugin, { fastify: '5.x', name: 'fastify-gateway' })
