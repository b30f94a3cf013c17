/**
 * A backend-for-frontend endpoint on the gateway: `GET /api/v1/dashboard` calls the users and orders
 * services in parallel, each call bounded by its own timeout and run through that service's circuit
 * breaker (the same breaker the proxied routes use), and answers one JSON document. When one call
 * fails the other part is still returned, with `partial: true` and the failed part named; when
 * every call fails the answer is a 502 problem.
 */
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { Agent, request as undiciRequest } from 'undici'
// In your own project: import { BreakerOpenError, gateway, … } from 'fastify-gateway'
import {
  BreakerOpenError, gateway, gatewayServerOptions, sendProblem,
  type ApiKeyConsumer, type GatewayServerOptions, type ServiceBreaker
} from '../../lib/index.js'

/** Why a part is missing from the dashboard. */
export type PartFailure =
  /** No answer within the call's timeout. */
  | 'timeout'
  /** Refused, reset, a 5xx or a body that is not JSON. */
  | 'unavailable'
  /** The service's breaker is open: the call was not made. */
  | 'circuit_open'
  /** The service answered 4xx: it is up (the breaker counts a success), but the part is missing. */
  | 'rejected'

export interface Dashboard {
  user: unknown
  orders: unknown
  /** True when a part is missing; its value is then null and it is listed in `failed`. */
  partial: boolean
  failed: Array<{ part: 'user' | 'orders', reason: PartFailure }>
}

export interface BffConfig {
  /** Base URL of each service, e.g. `http://users:8001`. */
  upstreams: { users: string, orders: string }
  /** Consumers by the SHA-256 hex digest of their API key. */
  apiKeys: Record<string, ApiKeyConsumer>
  /** Longest wait for each call, connect to last body byte, in ms. Default 2,000. */
  callTimeoutMs?: number
  logger?: GatewayServerOptions['logger']
}

const DEFAULT_CALL_TIMEOUT_MS = 2_000

/** A failed call, carrying only our own reason: no upstream address or library message leaves this file. */
class PartError extends Error {
  readonly reason: PartFailure
  constructor (reason: PartFailure, options?: ErrorOptions) {
    super(reason, options)
    this.reason = reason
  }
}

function reasonOf (error: unknown): PartFailure {
  if (error instanceof BreakerOpenError) return 'circuit_open'
  if (error instanceof PartError) return error.reason
  const { name, code } = error as { name?: string, code?: string }
  // AbortSignal.timeout aborts with a TimeoutError; undici's own timeouts have codes.
  if (name === 'TimeoutError' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'timeout'
  return 'unavailable'
}

export async function buildBff (config: BffConfig): Promise<FastifyInstance> {
  const app = Fastify({ ...gatewayServerOptions({ logger: config.logger }) })
  const callTimeoutMs = config.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS

  await app.register(gateway, {
    auth: { apiKeys: { keys: config.apiKeys } },
    rateLimit: { perConsumer: { max: 300, window: '1m' } },
    // Declared as services so that each has a breaker (and, here, a proxied route as well): the
    // dashboard and the proxy feed and obey the same breaker.
    services: {
      users: { upstream: config.upstreams.users, prefix: '/api/v1/users', breaker: { volumeThreshold: 10, resetTimeout: '30s' } },
      orders: { upstream: config.upstreams.orders, prefix: '/api/v1/orders', breaker: { volumeThreshold: 10, resetTimeout: '30s' } }
    }
  })

  // Our own pool for the dashboard's calls, closed with the app (we close what we create).
  const agent = new Agent({ connect: { timeout: callTimeoutMs }, keepAliveTimeout: 4_000, connections: 64 })
  app.addHook('onClose', async () => { await agent.close() })

  function breakerOf (name: string): ServiceBreaker {
    const breaker = app.gateway.breaker(name)
    if (breaker === undefined) throw new Error(`service ${name} has no breaker`)
    return breaker
  }
  const parts = { user: { breaker: breakerOf('users'), base: config.upstreams.users }, orders: { breaker: breakerOf('orders'), base: config.upstreams.orders } }

  /** GET `path` on a part's service through its breaker; resolves to the JSON body. */
  async function fetchPart (request: FastifyRequest, part: keyof typeof parts, path: string): Promise<unknown> {
    const { breaker, base } = parts[part]
    return await breaker.run(async () => {
      // The timeout covers the whole call, body included: a stalled body is a timeout too.
      const signal = AbortSignal.timeout(callTimeoutMs)
      const response = await undiciRequest(new URL(path, base), {
        dispatcher: agent,
        signal,
        headers: {
          accept: 'application/json',
          // The same identity headers the proxy sets: the request id and the verified consumer.
          'x-request-id': request.id,
          'x-consumer-id': request.consumer?.id ?? '',
          'x-consumer-scopes': (request.consumer?.scopes ?? []).join(' ')
        }
      })
      // Only a rejection counts against the breaker: throw on 5xx, resolve on everything else.
      if (response.statusCode >= 500) {
        await response.body.dump()
        throw new PartError('unavailable')
      }
      if (response.statusCode >= 400) {
        await response.body.dump()
        // The service is up: resolve, so that the breaker counts a success; reported below.
        return new PartError('rejected')
      }
      try {
        return await response.body.json()
      } catch (error) {
        throw new PartError(reasonOf(error), { cause: error })
      }
    }).then((value) => {
      if (value instanceof PartError) throw value
      return value
    })
  }

  app.get('/api/v1/dashboard', async function dashboard (request, reply) {
    const consumer = encodeURIComponent(request.consumer?.id ?? '')
    const [user, orders] = await Promise.allSettled([
      fetchPart(request, 'user', `/${consumer}`),
      fetchPart(request, 'orders', `/?userId=${consumer}`)
    ])
    const failed: Dashboard['failed'] = []
    if (user.status === 'rejected') failed.push({ part: 'user', reason: reasonOf(user.reason) })
    if (orders.status === 'rejected') failed.push({ part: 'orders', reason: reasonOf(orders.reason) })
    for (const { part, reason } of failed) request.log.warn({ part, reason }, 'dashboard part missing')
    // Nothing to show: one documented problem, never the upstreams' errors.
    if (failed.length === 2) return sendProblem(reply, 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE')
    const body: Dashboard = {
      user: user.status === 'fulfilled' ? user.value : null,
      orders: orders.status === 'fulfilled' ? orders.value : null,
      partial: failed.length > 0,
      failed
    }
    // A partial answer must not be cached as if it were whole.
    if (body.partial) reply.header('cache-control', 'no-store')
    return body
  })

  return app
}
