/** fastify-gateway: composable Fastify v5 plugins to build a secure-by-default API gateway in code. */
import { gateway } from './gateway.js'

export { gateway, type GatewayOptions } from './gateway.js'
export { gatewayServerOptions, type GatewayServerOptions } from './server-options.js'
export { correlationId, requestIdGenerator, isValidTraceparent, type CorrelationIdOptions } from './plugins/correlation-id.js'
export { requestGuard, type RequestGuardOptions } from './plugins/request-guard.js'
export { proxy, type ProxyOptions } from './plugins/proxy.js'
export { cors, type CorsOptions } from './plugins/cors.js'
export { auth } from './plugins/auth.js'
export { rateLimit } from './plugins/rate-limit.js'
export { breaker, BreakerOpenError, type BreakerOptions, type BreakerPolicy, type ServiceBreaker } from './plugins/breaker.js'
export { metrics, type MetricsOptions, type MetricsExposure, type GatewayMetrics } from './plugins/metrics.js'
export { accessLog, type AccessLogOptions } from './plugins/access-log.js'
export { health, type HealthOptions } from './plugins/health.js'
export { closeGracefully, type CloseGracefullyOptions, type CloseGracefullyResult } from './shutdown.js'
export {
  GATEWAY_ERRORS, sendProblem, problemBody, InvalidOptionError, PROBLEM_CONTENT_TYPE,
  type GatewayErrorCode, type GatewayProblem
} from './errors.js'
export type {
  Duration, GatewayServiceOptions, GatewayTimeouts, GatewayRoutePolicy, Consumer, ConsumerClaims, ApiKeyConsumer,
  AuthOptions, AuthJwtOptions, AuthApiKeyOptions, JwksIssuerOptions, AsymmetricAlgorithm,
  RateLimitOptions, RateLimitPolicy, RateLimitRedisClient
} from './types.js'

export default gateway
