/**
 * breaker: one circuit breaker per service (lib/internal/circuit.ts), used by the proxy and
 * available to the team's own handlers as `fastify.gateway.breaker(name)`. Transport errors,
 * timeouts and 5xx count as failures, 4xx as successes. Open → 503 `GATEWAY_ERR_CIRCUIT_OPEN` with `Retry-After` until the
 * next probe; half-open lets exactly one probe through. Breakers are shut down in onClose.
 */
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError } from '../errors.js'
import { Circuit, NotCountedError, REFUSED } from '../internal/circuit.js'
import { toMilliseconds, type Duration } from '../internal/duration.js'
import { isPlainObject, optionalObject, positiveInteger, rejectUnknownKeys } from '../internal/options.js'

/**
 * When a service's breaker opens, and for how long.
 *
 * @example
 * ```ts
 * services: { orders: { upstream: 'http://orders:8002', prefix: '/api/v1/orders', breaker: { errorThresholdPercentage: 50, resetTimeout: '10s', volumeThreshold: 20, failureStatuses: [500, 502, 503, 504] } } }
 * ```
 */
export interface BreakerPolicy {
  /** Failure percentage in the rolling window that opens the breaker. Default 50. */
  errorThresholdPercentage?: number
  /** How long the breaker stays open before one probe is let through. Default 30 s. */
  resetTimeout?: Duration
  /** Requests in the window before the breaker may open at all. Default 10 (0 would open on the first failure). */
  volumeThreshold?: number
  /** The rolling window failures are counted in. Default 10 s. */
  rollingWindow?: Duration
  /** Upstream statuses that count as failures. Default: every 5xx. Transport errors and timeouts always count. */
  failureStatuses?: readonly number[]
}

/**
 * Options of the {@link breaker} plugin.
 *
 * @example
 * ```ts
 * await app.register(breaker, { services: { orders: { resetTimeout: '10s' }, reports: false } })
 * ```
 */
export interface BreakerOptions {
  /** A breaker per service name; `false` for none. */
  services?: Record<string, BreakerPolicy | false>
}

/**
 * A service's breaker, for the proxy and for the team's own calls to the service.
 *
 * @example
 * ```ts
 * const orders = app.gateway.breaker('orders')
 * if (orders?.state === 'open') reply.header('retry-after', orders.retryAfterSeconds())
 * ```
 */
export interface ServiceBreaker {
  readonly name: string
  /** The target's index in the service's `upstream` list, for a per-target breaker. */
  readonly target: number | undefined
  readonly state: 'closed' | 'open' | 'half-open'
  /** State changes since start, by the state entered (read by the metrics plugin). */
  readonly transitions: Readonly<Record<'open' | 'half-open' | 'closed', number>>
  /** Run `action` through the breaker; rejects with {@link BreakerOpenError} when open. A rejection of `action` counts as a failure. */
  run: <T>(action: () => Promise<T>) => Promise<T>
  /** Whole seconds until the next probe (at least 1 while open). */
  retryAfterSeconds: () => number
  /** Whether an upstream answer with this status counts as a failure. */
  countsAsFailure: (status: number) => boolean
}

/**
 * The breaker refused the call without running it.
 *
 * @example
 * ```ts
 * try {
 *   await app.gateway.breaker('orders')?.run(async () => await fetchOrders())
 * } catch (error) {
 *   if (error instanceof BreakerOpenError) return { orders: [], stale: true }
 *   throw error
 * }
 * ```
 */
export class BreakerOpenError extends Error {
  readonly code = 'GATEWAY_CIRCUIT_OPEN'
}

export { NotCountedError }

declare module 'fastify' {
  interface FastifyInstance {
    /** fastify-gateway's shared services. */
    gateway: {
      /** The service's breaker; with `target` (an index in its `upstream` list), that target's own breaker. */
      breaker: (name: string, target?: number) => ServiceBreaker | undefined
      /** Every breaker, per-target ones included. */
      breakers: () => readonly ServiceBreaker[]
    }
  }
}

// The proxy records its calls on the circuit itself, synchronously: no promise per request.
const circuitsByBreaker = new WeakMap<ServiceBreaker, Circuit>()

/** The state machine behind a breaker of this plugin (for the proxy). */
export function circuitOf (breaker: ServiceBreaker): Circuit {
  return circuitsByBreaker.get(breaker) as Circuit
}

const DEFAULTS = Object.freeze({ errorThresholdPercentage: 50, resetTimeoutMs: 30_000, volumeThreshold: 10, rollingWindowMs: 10_000 })

function resolvePolicy (input: unknown, path: string) {
  const policy = optionalObject(input, path)
  rejectUnknownKeys(policy, ['errorThresholdPercentage', 'resetTimeout', 'volumeThreshold', 'rollingWindow', 'failureStatuses'], path)
  const statuses = policy.failureStatuses
  if (statuses !== undefined && (!Array.isArray(statuses) || !statuses.every((status) => Number.isInteger(status) && status >= 400 && status <= 599))) {
    throw new InvalidOptionError(`${path}.failureStatuses`, 'expected 4xx or 5xx status codes')
  }
  const threshold = policy.errorThresholdPercentage ?? DEFAULTS.errorThresholdPercentage
  if (typeof threshold !== 'number' || !(threshold > 0 && threshold <= 100)) throw new InvalidOptionError(`${path}.errorThresholdPercentage`, 'expected a percentage in (0, 100]')
  return Object.freeze({
    errorThresholdPercentage: threshold,
    resetTimeoutMs: policy.resetTimeout === undefined ? DEFAULTS.resetTimeoutMs : toMilliseconds(policy.resetTimeout, `${path}.resetTimeout`),
    volumeThreshold: positiveInteger(policy.volumeThreshold, `${path}.volumeThreshold`, DEFAULTS.volumeThreshold),
    rollingWindowMs: policy.rollingWindow === undefined ? DEFAULTS.rollingWindowMs : toMilliseconds(policy.rollingWindow, `${path}.rollingWindow`),
    failureStatuses: statuses === undefined ? undefined : new Set(statuses as number[])
  })
}

const breakerPlugin: FastifyPluginAsync<BreakerOptions> = async function breaker (fastify, input) {
  const options = optionalObject(input, 'breaker')
  rejectUnknownKeys(options, ['services'], 'breaker')
  const breakers = new Map<string, ServiceBreaker>()
  const policies = new Map<string, ReturnType<typeof resolvePolicy>>()
  const circuits: Circuit[] = []

  function createBreaker (name: string, target: number | undefined, policy: ReturnType<typeof resolvePolicy>): ServiceBreaker {
    const transitions = { open: 0, 'half-open': 0, closed: 0 }
    // A target is named by its position in the service's `upstream` list: logs carry no upstream address.
    const where = target === undefined ? { service: name } : { service: name, target }
    const circuit = new Circuit(policy, (state) => {
      transitions[state]++
      if (state === 'open') fastify.log.warn(where, 'circuit breaker open: failing fast')
      else if (state === 'half-open') fastify.log.info(where, 'circuit breaker half-open: one probe')
      else fastify.log.info(where, 'circuit breaker closed')
    })
    circuits.push(circuit)
    const serviceBreaker = Object.freeze({
      name,
      target,
      transitions,
      get state () { return circuit.state },
      async run<T> (action: () => Promise<T>): Promise<T> {
        const ticket = circuit.tryCall()
        if (ticket === REFUSED) throw new BreakerOpenError(`circuit of ${name} is open`)
        let result: T
        try {
          result = await action()
        } catch (error) {
          circuit.record(ticket, error instanceof Error ? error : new Error(String(error)))
          throw error
        }
        circuit.record(ticket, undefined)
        return result
      },
      retryAfterSeconds: () => circuit.retryAfterSeconds(),
      countsAsFailure: policy.failureStatuses === undefined
        ? (status: number) => status >= 500
        : (status: number) => (policy.failureStatuses as Set<number>).has(status)
    } satisfies ServiceBreaker)
    circuitsByBreaker.set(serviceBreaker, circuit)
    return serviceBreaker
  }

  for (const [name, input] of Object.entries(optionalObject(options.services, 'breaker.services'))) {
    if (input === false) continue
    if (input !== undefined && !isPlainObject(input)) throw new InvalidOptionError(`services.${name}.breaker`, 'expected an object or false')
    const policy = resolvePolicy(input, `services.${name}.breaker`)
    policies.set(name, policy)
    breakers.set(name, createBreaker(name, undefined, policy))
  }

  /** The service's breaker, or — with `target`, an index in its `upstream` list — that target's own breaker, created on first use. */
  function breakerOf (name: string, target?: number): ServiceBreaker | undefined {
    if (target === undefined) return breakers.get(name)
    const policy = policies.get(name)
    if (policy === undefined) return undefined
    const key = `${name} ${target}`
    let found = breakers.get(key)
    if (found === undefined) {
      found = createBreaker(name, target, policy)
      breakers.set(key, found)
    }
    return found
  }

  fastify.decorate('gateway', Object.freeze({ breaker: breakerOf, breakers: () => [...breakers.values()] }))
  fastify.addHook('onClose', async () => { for (const circuit of circuits) circuit.shutdown() })
}

/**
 * A circuit breaker per service. Registered by the umbrella from `services.<name>.breaker`.
 *
 * @example
 * ```ts
 * const orders = app.gateway.breaker('orders')
 * app.get('/summary', async () => await orders?.run(async () => await fetchOrders()))
 * ```
 */
export const breaker = fp(breakerPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.breaker',
  dependencies: ['fastify-gateway.correlation-id', 'fastify-gateway.request-guard']
})
