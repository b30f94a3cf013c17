/**
 * rate-limit: per-consumer, per-service and per-route limits, composed on every request — the
 * strictest decides. Runs as an instance-level onRequest hook after auth, so keys are the verified
 * consumer (or the client IP as Fastify's trustProxy sees it), before any body is read.
 *
 * The store is the caller's Redis or this process's memory. In memory a request is counted
 * synchronously; in Redis all its personal limits are counted by one script call. Every store
 * decision is bounded by `storeTimeout`; a failure applies `onStoreError` and the store is skipped
 * for `storeRetryInterval`, then tried again: limiting through Redis resumes by itself.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { MemoryCounters, RedisCounters } from '../internal/rate-limit-counters.js'
import { createPolicyItems, identityOf, LimitEvaluationError, withinStoreTimeout } from '../internal/rate-limit-engine.js'
import { resolveLimit, resolveRateLimitOptions, type ResolvedLimit } from '../internal/rate-limit-options.js'
import { declareRequestFacts, factsOf, routeConfigOf } from '../internal/request-facts.js'
import { addReadinessCheck } from '../internal/readiness.js'
import type { Consumer, GatewayRoutePolicy, RateLimitOptions } from '../types.js'

/** A limit where it applies: its counters in memory, and its name in keys and logs. */
interface Counter {
  readonly limit: ResolvedLimit
  /** `consumer`, `service:<name>` or `route:<methods> <url>`. */
  readonly key: string
  /** The local counters: the memory store, or the `'local'` fallback of a Redis store. */
  readonly memory: MemoryCounters
}

/** What counting a batch through the store came to: counted (in Redis or locally), or the failure policy `open`/`closed`. */
type StoreOutcome = 'counted' | 'open' | 'closed'

/** One counter's state after this request's hit. */
interface Counted {
  readonly counter: Counter
  readonly max: number
  readonly count: number
  readonly ttlMs: number
}

/**
 * A route's limits. `personal` ones (a bucket per caller) are counted first; `shared` ones (`by:
 * 'all'`) only when no personal limit refused the request — so a caller over its own quota cannot
 * keep spending a limit everyone shares.
 */
interface RouteLimits {
  readonly personal: readonly Counter[]
  readonly shared: readonly Counter[]
}

const kLimits = Symbol('fastify-gateway.rate-limits')
const NO_LIMITS: RouteLimits = Object.freeze({ personal: Object.freeze([]), shared: Object.freeze([]) })
const INVALID: RouteLimits = Object.freeze({ personal: Object.freeze([]), shared: Object.freeze([]) })
const SHARED_BUCKET = 'all'

function maxOf (limit: ResolvedLimit, consumer: Consumer | null): number {
  if (typeof limit.max === 'number') return limit.max
  let max: unknown
  try {
    max = limit.max(consumer)
  } catch (error) {
    throw new LimitEvaluationError(`rate limit "${limit.name}": max() threw`, { cause: error })
  }
  if (!Number.isSafeInteger(max) || (max as number) < 0) throw new LimitEvaluationError(`rate limit "${limit.name}": max() returned ${String(max)}`)
  return max as number
}

const rateLimitPlugin: FastifyPluginAsync<RateLimitOptions> = async function rateLimit (fastify, input) {
  const options = resolveRateLimitOptions(input)
  const { store, storeTimeoutMs, storeRetryIntervalMs, onStoreError, memoryKeys, keyPrefix } = options
  declareRequestFacts(fastify)
  const redis = store === undefined ? undefined : new RedisCounters(store, storeTimeoutMs)
  const counters = new WeakMap<ResolvedLimit, Counter>()
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

  function counterOf (limit: ResolvedLimit, key: string): Counter {
    let counter = counters.get(limit)
    if (counter === undefined) {
      counter = Object.freeze({ limit, key, memory: new MemoryCounters(memoryKeys) })
      counters.set(limit, counter)
    }
    return counter
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
    const applicable: Counter[] = []
    if (options.perConsumer !== undefined) applicable.push(counterOf(options.perConsumer, 'consumer'))
    if (extra !== undefined) applicable.push(counterOf(extra, key))
    if (applicable.length === 0) return NO_LIMITS
    return Object.freeze({
      personal: Object.freeze(applicable.filter((counter) => counter.limit.by === 'consumer')),
      shared: Object.freeze(applicable.filter((counter) => counter.limit.by === 'all'))
    })
  }

  fastify.addHook('onRoute', function resolveRateLimits (route: RouteOptions) {
    const limits = limitsFor(route.config?.gateway, route.method, route.url)
    route.config = { ...route.config, [kLimits]: limits } as typeof route.config
  })

  function limitsOf (request: FastifyRequest): RouteLimits {
    const config = routeConfigOf(request)
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

  /** Counts a batch in memory, synchronously. */
  function countInMemory (batch: readonly Counter[], bucket: string, consumer: Consumer | null, into: Counted[]): void {
    const now = Date.now()
    for (const counter of batch) {
      const max = maxOf(counter.limit, consumer)
      const window = counter.memory.hit(bucket, counter.limit.windowMs, now)
      into.push({ counter, max, count: window.count, ttlMs: window.resetAt - now })
    }
  }

  /**
   * Counts a batch in Redis (in the script call of this event-loop turn; all keys of a batch share
   * the caller's hash tag), bounded by storeTimeout; else per the failure policy: locally, or
   * `'open'`/`'closed'`. Callbacks, not promises: the Redis path is taken by every request, and four
   * promise layers per request cost more than the script call's share. What runs after the store's
   * reply or its timeout goes to `fail` when it throws (a `max()` re-evaluated for the local count,
   * the next step), never into ioredis or a timer.
   */
  function countThroughStore (client: RedisCounters, request: FastifyRequest, batch: readonly Counter[], bucket: string, into: Counted[], next: (outcome: StoreOutcome) => void, fail: (error: unknown) => void): void {
    const consumer = request.consumer ?? null
    const proceed = (outcome: () => StoreOutcome): void => {
      try {
        next(outcome())
      } catch (error) {
        fail(error)
      }
    }
    const withoutStore = (): StoreOutcome => countWithoutStore(batch, bucket, consumer, into)
    if (Date.now() < storeDownUntil) {
      proceed(withoutStore)
      return
    }
    const maxes: number[] = []
    const keys: string[] = []
    const windows: number[] = []
    for (const counter of batch) {
      maxes.push(maxOf(counter.limit, consumer))
      // The bucket is the hash tag: all keys of one batch are in one Redis Cluster slot.
      keys.push(`${keyPrefix}{${bucket}}:${counter.key}`)
      windows.push(counter.limit.windowMs)
    }
    const failed = (error: unknown): void => {
      factsOf(request).storeError = true
      storeDown(error)
      proceed(withoutStore)
    }
    // RedisCounters answers once: the hits, the store's error, or a StoreTimeoutError after storeTimeout.
    client.hit(bucket, keys, windows, (error, hits, offset) => {
      if (error !== undefined) {
        failed(error)
        return
      }
      storeUp()
      proceed(() => {
        for (let i = 0; i < batch.length; i++) {
          into.push({ counter: batch[i], max: maxes[i], count: Number(hits[2 * (offset + i)]), ttlMs: Number(hits[2 * (offset + i) + 1]) })
        }
        return 'counted'
      })
    })
  }

  /** The store is down or failed: count locally (`'local'`), or answer per `onStoreError`. */
  function countWithoutStore (batch: readonly Counter[], bucket: string, consumer: Consumer | null, into: Counted[]): StoreOutcome {
    if (onStoreError !== 'local') return onStoreError
    countInMemory(batch, bucket, consumer, into)
    return 'counted'
  }

  const policyItem = createPolicyItems()

  /** Whether a non-dry-run limit of the batch refused the request. */
  const refused = (counted: readonly Counted[]): boolean => counted.some((result) => result.count > result.max && !result.counter.limit.dryRun)

  /** Headers, and the 429 when a limit refused; true when it answered the request. */
  function decide (request: FastifyRequest, reply: FastifyReply, counted: readonly Counted[], identity: string): boolean {
    let policies = ''
    let states = ''
    let retryAfter = 0
    let refusedBy: string | undefined
    let tightest: { max: number, remaining: number, reset: number } | undefined
    for (const { counter, max, count, ttlMs } of counted) {
      const { limit } = counter
      const exceeded = count > max
      if (limit.dryRun) {
        if (exceeded) request.log.info({ limit: limit.name, key: `${counter.key}:${limit.by === 'all' ? SHARED_BUCKET : identity}` }, 'rate limit would block (dry run)')
        continue
      }
      const remaining = Math.max(0, max - count)
      const reset = Math.ceil(ttlMs / 1000)
      const separator = policies === '' ? '' : ', '
      policies += separator + policyItem(limit, max)
      states += `${separator}"${limit.name}";r=${remaining};t=${reset}`
      if (exceeded) {
        retryAfter = Math.max(retryAfter, reset, 1)
        refusedBy ??= limit.name
      }
      if (tightest === undefined || remaining < tightest.remaining) tightest = { max, remaining, reset }
    }
    if (policies !== '') reply.header('ratelimit-policy', policies).header('ratelimit', states)
    if (options.legacyHeaders && tightest !== undefined) {
      reply.header('x-ratelimit-limit', tightest.max).header('x-ratelimit-remaining', tightest.remaining).header('x-ratelimit-reset', tightest.reset)
    }
    if (retryAfter === 0) return false
    request.log.debug({ consumer: request.consumer?.id }, 'rate limited')
    factsOf(request).rateLimited = refusedBy
    sendProblem(reply, 'GATEWAY_ERR_RATE_LIMITED', { headers: { 'retry-after': retryAfter } })
    return true
  }

  function refuseForStore (reply: FastifyReply): void {
    sendProblem(reply, 'GATEWAY_ERR_RATE_LIMIT_STORE', { headers: { 'retry-after': Math.ceil(storeRetryIntervalMs / 1000) } })
  }

  /**
   * The Redis path: the personal batch, then (unless it refused already) the shared one, each at
   * most one store call; `done` when no limit answered. A limit that cannot be evaluated is answered
   * like in the memory path: synchronously by the hook's own catch, later through `fail`.
   */
  function enforceThroughStore (client: RedisCounters, request: FastifyRequest, reply: FastifyReply, limits: RouteLimits, identity: string, done: () => void): void {
    const counted: Counted[] = []
    const fail = (error: unknown): void => { cannotEvaluate(request, reply, error) }
    const decideAll = (): void => { if (!decide(request, reply, counted, identity)) done() }
    countThroughStore(client, request, limits.personal, identity, counted, (personal) => {
      if (personal === 'closed') return refuseForStore(reply)
      if (personal === 'open') return done()
      if (limits.shared.length === 0 || refused(counted)) return decideAll()
      countThroughStore(client, request, limits.shared, SHARED_BUCKET, counted, (shared) => {
        if (shared === 'closed') refuseForStore(reply)
        else decideAll()
      }, fail)
    }, fail)
  }

  function cannotEvaluate (request: FastifyRequest, reply: FastifyReply, error: unknown): void {
    // A limit that cannot be evaluated (e.g. a max() that throws) must not reach the host's error
    // handler with its message: answer like any other gateway failure.
    request.log.error({ err: error }, 'rate limit could not be evaluated')
    sendProblem(reply, 'GATEWAY_ERR_INTERNAL')
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
    const identity = identityOf(request)
    if (redis !== undefined) {
      // Never decide from reply.sent: with an async onSend hook a 429 is still being written.
      try {
        enforceThroughStore(redis, request, reply, limits, identity, done)
      } catch (error) {
        cannotEvaluate(request, reply, error)
      }
      return
    }
    // The memory store: counted and decided synchronously.
    let answered: boolean
    try {
      const counted: Counted[] = []
      const consumer = request.consumer ?? null
      countInMemory(limits.personal, identity, consumer, counted)
      if (limits.shared.length > 0 && !refused(counted)) countInMemory(limits.shared, SHARED_BUCKET, consumer, counted)
      answered = decide(request, reply, counted, identity)
    } catch (error) {
      cannotEvaluate(request, reply, error)
      return
    }
    if (!answered) done()
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
