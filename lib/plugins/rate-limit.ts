/**
 * rate-limit: per-consumer, per-service and per-route limits, composed on every request — the
 * strictest decides — with @fastify/rate-limit as the counting engine (`createRateLimit` counts
 * without replying). Runs as an instance-level onRequest hook after auth, so keys are the verified
 * consumer (or the client IP as Fastify's trustProxy sees it), before any body is read.
 *
 * The store is the caller's Redis or this process's memory. Every store decision is bounded by
 * `storeTimeout`; a failure applies `onStoreError` and the store is skipped for
 * `storeRetryInterval`, then tried again: limiting through Redis resumes by itself.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { MemoryStore } from '../internal/memory-store.js'
import { countingEngine, createPolicyItems, identityOf, LimitEvaluationError, withinStoreTimeout } from '../internal/rate-limit-engine.js'
import { resolveLimit, resolveRateLimitOptions, type ResolvedLimit } from '../internal/rate-limit-options.js'
import { factsOf } from '../internal/request-facts.js'
import { addReadinessCheck } from '../internal/readiness.js'
import type { GatewayRoutePolicy, RateLimitOptions } from '../types.js'

type Check = ReturnType<FastifyInstance['createRateLimit']>
type Counted = Extract<Awaited<ReturnType<Check>>, { isAllowed: false }>
/**
 * A route's limits. `personal` ones (a bucket per caller) are counted first; `shared` ones (`by:
 * 'all'`) only when no personal limit refused the request — so a caller over its own quota cannot
 * keep spending a limit everyone shares.
 */
interface RouteLimits {
  readonly personal: readonly ResolvedLimit[]
  readonly shared: readonly ResolvedLimit[]
}

const kLimits = Symbol('fastify-gateway.rate-limits')
const NO_LIMITS: RouteLimits = Object.freeze({ personal: Object.freeze([]), shared: Object.freeze([]) })
const INVALID: RouteLimits = Object.freeze({ personal: Object.freeze([]), shared: Object.freeze([]) })

const rateLimitPlugin: FastifyPluginAsync<RateLimitOptions> = async function rateLimit (fastify, input) {
  const options = resolveRateLimitOptions(input)
  const { store, storeTimeoutMs, storeRetryIntervalMs, onStoreError, memoryKeys } = options
  const createLocal = await countingEngine(fastify, { global: false, store: MemoryStore as never })
  const createShared = store === undefined ? undefined : await countingEngine(fastify, { global: false, redis: store as never, nameSpace: options.keyPrefix })
  const checks = new WeakMap<ResolvedLimit, { shared: Check | undefined, local: Check }>()
  const serviceLimits = new Map<string, ResolvedLimit | undefined>()
  // What the first route of each service declared: every route of a service must carry the same.
  const serviceDeclared = new Map<string, unknown>()
  // By method and URL, HEAD folded into GET: Fastify's automatic HEAD route shares its GET route's
  // counter, while two routes that share one declared object still get a bucket each.
  const routeLimits = new Map<string, ResolvedLimit | undefined>()
  const lazilyResolved = new WeakMap<object, RouteLimits>()
  let storeDownUntil = 0

  // Composed by hand in the wrong order, limits would key every caller by IP: fail at boot instead.
  const authRegisteredBefore = fastify.hasPlugin('fastify-gateway.auth')
  fastify.addHook('onReady', function checkPluginOrder (done) {
    done(!authRegisteredBefore && fastify.hasPlugin('fastify-gateway.auth')
      ? new Error('fastify-gateway.rate-limit is registered before fastify-gateway.auth: register auth first, limits key on the verified consumer')
      : undefined)
  })

  function checksOf (limit: ResolvedLimit, key: string): { shared: Check | undefined, local: Check } {
    let found = checks.get(limit)
    if (found === undefined) {
      const definition = {
        max: typeof limit.max === 'number'
          ? limit.max
          : (request: FastifyRequest) => {
              let max: unknown
              try {
                max = (limit.max as (consumer: unknown) => unknown)(request.consumer ?? null)
              } catch (error) {
                throw new LimitEvaluationError(`rate limit "${limit.name}": max() threw`, { cause: error })
              }
              if (!Number.isSafeInteger(max) || (max as number) < 0) throw new LimitEvaluationError(`rate limit "${limit.name}": max() returned ${String(max)}`)
              return max as number
            },
        timeWindow: limit.windowMs,
        keyGenerator: limit.by === 'all' ? () => `${key}:all` : (request: FastifyRequest) => `${key}:${identityOf(request)}`,
        cache: memoryKeys
      }
      found = { shared: createShared?.(definition), local: createLocal(definition) }
      checks.set(limit, found)
    }
    return found
  }

  /**
   * The limits of one route: the consumer's, plus the service's (proxied routes carry their
   * service's `rateLimit`) or the route's own. `false` at either level exempts the route.
   */
  function limitsFor (gateway: GatewayRoutePolicy | undefined, method: string | string[], url: string): RouteLimits {
    const declared = gateway?.rateLimit
    if (declared === false) return NO_LIMITS
    const service = gateway?.service
    let extra: ResolvedLimit | undefined
    let key: string
    if (service !== undefined) {
      // The proxy gives all routes of a service one policy object. A route of the team's own naming
      // the service with another limit (or none) would otherwise set, or lift, the service's limit.
      if (serviceDeclared.has(service) && serviceDeclared.get(service) !== declared) {
        throw new InvalidOptionError(`config.gateway of ${url}.service`, `names service "${service}", whose limit is set in services.${service}.rateLimit; leave service out of config.gateway`)
      }
      serviceDeclared.set(service, declared)
      if (!serviceLimits.has(service)) serviceLimits.set(service, resolveLimit(declared, `services.${service}.rateLimit`, service) as ResolvedLimit | undefined)
      extra = serviceLimits.get(service)
      key = `service:${service}`
    } else if (declared !== undefined) {
      key = `route:${[...new Set([method].flat().map((name) => name === 'HEAD' ? 'GET' : name))].join(',')} ${url}`
      if (!routeLimits.has(key)) routeLimits.set(key, resolveLimit(declared, `config.gateway of ${url}.rateLimit`, 'route') as ResolvedLimit | undefined)
      extra = routeLimits.get(key)
    } else {
      key = ''
    }
    const limits = [options.perConsumer, extra].filter((limit): limit is ResolvedLimit => limit !== undefined)
    if (limits.length === 0) return NO_LIMITS
    if (options.perConsumer !== undefined) checksOf(options.perConsumer, 'consumer')
    if (extra !== undefined) checksOf(extra, key)
    return Object.freeze({
      personal: Object.freeze(limits.filter((limit) => limit.by === 'consumer')),
      shared: Object.freeze(limits.filter((limit) => limit.by === 'all'))
    })
  }

  fastify.addHook('onRoute', function resolveRateLimits (route: RouteOptions) {
    const limits = limitsFor(route.config?.gateway, route.method, route.url)
    route.config = { ...route.config, [kLimits]: limits } as typeof route.config
  })

  function limitsOf (request: FastifyRequest): RouteLimits {
    const config = request.routeOptions.config as Record<PropertyKey, unknown> & { url?: string, method?: string | string[], gateway?: GatewayRoutePolicy }
    if (config.url === undefined) return NO_LIMITS
    const limits = config[kLimits] as RouteLimits | undefined
    if (limits !== undefined) return limits
    let lazy = lazilyResolved.get(config)
    if (lazy === undefined) {
      try {
        lazy = limitsFor(config.gateway, config.method ?? request.method, config.url)
      } catch (error) {
        // Registered before the gateway, so it could not fail at boot: refuse every request, loudly.
        fastify.log.error({ err: error, route: config.url }, 'invalid rate limit on a route registered before the gateway; the route is refused')
        lazy = INVALID
      }
      lazilyResolved.set(config, lazy)
    }
    return lazy
  }

  function storeUp (): void {
    if (storeDownUntil === 0) return
    storeDownUntil = 0
    fastify.log.info('rate-limit store reachable again: shared limits apply')
  }

  function storeDown (error: unknown): void {
    if (storeDownUntil === 0) fastify.log.warn({ code: (error as { code?: string }).code, onStoreError }, 'rate-limit store unavailable: applying the failure policy')
    storeDownUntil = Date.now() + storeRetryIntervalMs
  }

  if (store !== undefined) {
    // A load balancer that stops sending traffic would also stop requests from finding the store
    // back: the probe pings it itself. Unready only when requests would get 503 (onStoreError closed).
    addReadinessCheck(fastify, 'rateLimitStore', async function rateLimitStoreReady () {
      if (typeof store.ping === 'function') {
        try {
          await withinStoreTimeout(store.ping(), storeTimeoutMs)
          storeUp()
        } catch (error) {
          storeDown(error)
        }
      }
      const up = storeDownUntil === 0
      return { ready: up || onStoreError !== 'closed', state: up ? 'up' : 'down' }
    })
  }

  async function countShared (request: FastifyRequest, limits: readonly ResolvedLimit[]): Promise<Counted[] | undefined> {
    if (Date.now() < storeDownUntil) return undefined
    try {
      const counted = await withinStoreTimeout(Promise.all(limits.map(async (limit) => await (checks.get(limit)?.shared as Check)(request))), storeTimeoutMs)
      storeUp()
      return counted as Counted[]
    } catch (error) {
      if (error instanceof LimitEvaluationError) throw error
      factsOf(request).storeError = true
      storeDown(error)
      return undefined
    }
  }

  /** Counts one batch: in the store, or per the failure policy; `'open'`/`'closed'` when it decided. */
  async function count (request: FastifyRequest, batch: readonly ResolvedLimit[]): Promise<Counted[] | 'open' | 'closed'> {
    if (batch.length === 0) return []
    if (store !== undefined) {
      const counted = await countShared(request, batch)
      if (counted !== undefined) return counted
      if (onStoreError !== 'local') return onStoreError
    }
    return await Promise.all(batch.map(async (limit) => await (checks.get(limit)?.local as Check)(request))) as Counted[]
  }

  const policyItem = createPolicyItems()

  /** Counts and decides; true when it answered the request (429 or 503). */
  async function enforce (request: FastifyRequest, reply: FastifyReply, limits: RouteLimits): Promise<boolean> {
    const personal = await count(request, limits.personal)
    if (personal === 'closed') return refuseForStore(reply)
    if (personal === 'open') return false
    const evaluated: Array<[ResolvedLimit, Counted]> = limits.personal.map((limit, i) => [limit, personal[i]])
    if (limits.shared.length > 0 && !evaluated.some(([limit, result]) => result.isExceeded && !limit.dryRun)) {
      const shared = await count(request, limits.shared)
      if (shared === 'closed') return refuseForStore(reply)
      if (shared !== 'open') limits.shared.forEach((limit, i) => evaluated.push([limit, shared[i]]))
    }

    let policies = ''
    let states = ''
    let retryAfter = 0
    let refusedBy: string | undefined
    let tightest: Counted | undefined
    for (const [limit, result] of evaluated) {
      if (limit.dryRun) {
        if (result.isExceeded) request.log.info({ limit: limit.name, key: result.key }, 'rate limit would block (dry run)')
        continue
      }
      const separator = policies === '' ? '' : ', '
      policies += separator + policyItem(limit, result.max)
      states += `${separator}"${limit.name}";r=${result.remaining};t=${result.ttlInSeconds}`
      if (result.isExceeded) {
        retryAfter = Math.max(retryAfter, result.ttlInSeconds, 1)
        refusedBy ??= limit.name
      }
      if (tightest === undefined || result.remaining < tightest.remaining) tightest = result
    }
    if (policies !== '') reply.header('ratelimit-policy', policies).header('ratelimit', states)
    if (options.legacyHeaders && tightest !== undefined) {
      reply.header('x-ratelimit-limit', tightest.max).header('x-ratelimit-remaining', tightest.remaining).header('x-ratelimit-reset', tightest.ttlInSeconds)
    }
    if (retryAfter === 0) return false
    request.log.debug({ consumer: request.consumer?.id }, 'rate limited')
    factsOf(request).rateLimited = refusedBy
    sendProblem(reply, 'GATEWAY_ERR_RATE_LIMITED', { headers: { 'retry-after': retryAfter } })
    return true
  }

  function refuseForStore (reply: FastifyReply): true {
    sendProblem(reply, 'GATEWAY_ERR_RATE_LIMIT_STORE', { headers: { 'retry-after': Math.ceil(storeRetryIntervalMs / 1000) } })
    return true
  }

  fastify.addHook('onRequest', function limitRequest (request, reply, done) {
    const limits = limitsOf(request)
    if (limits === NO_LIMITS) {
      done()
      return
    }
    if (limits === INVALID) {
      sendProblem(reply, 'GATEWAY_ERR_INTERNAL')
      return
    }
    // Never decide from reply.sent: with an async onSend hook a 429 is still being written.
    enforce(request, reply, limits).then((answered) => { if (!answered) done() }, (error: unknown) => {
      // A limit that cannot be evaluated (e.g. a max() that throws) must not reach the host's error
      // handler with its message: answer like any other gateway failure.
      request.log.error({ err: error }, 'rate limit could not be evaluated')
      sendProblem(reply, 'GATEWAY_ERR_INTERNAL')
    })
  })
}

/**
 * Limits requests per consumer, per service and per route; the strictest applicable limit
 * decides. Headers per draft-ietf-httpapi-ratelimit-headers; 429 problem with `Retry-After`.
 *
 * @example
 * ```ts
 * await app.register(rateLimit, {
 *   store: new Redis(process.env.REDIS_URL, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 }),
 *   perConsumer: { max: (consumer) => consumer?.claims.plan === 'gold' ? 1000 : 100, window: '1m' },
 *   onStoreError: 'local'
 * })
 * app.get('/search', { config: { gateway: { rateLimit: { max: 10, window: '1s' } } } }, search)
 * ```
 */
export const rateLimit = fp(rateLimitPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.rate-limit',
  dependencies: ['fastify-gateway.correlation-id', 'fastify-gateway.request-guard']
})
