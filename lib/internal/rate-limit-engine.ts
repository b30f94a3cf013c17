/**
 * The pieces of the rate-limit plugin that do not hold its state: the bucket of a caller, the
 * store's time bounds and the RateLimit-Policy items.
 */
import type { FastifyRequest } from 'fastify'
import { addressBucket } from './rate-limit-counters.js'
import type { ResolvedLimit } from './rate-limit-options.js'

export class StoreTimeoutError extends Error {
  readonly code = 'GATEWAY_RATE_LIMIT_STORE_TIMEOUT'
}

/**
 * The bucket of a caller: the verified consumer, namespaced by where its id comes from (the same
 * `sub` at two issuers is two people), else the client IP as trustProxy sees it (IPv6 by /64).
 */
export function identityOf (request: FastifyRequest): string {
  // `consumer` is undefined when the gateway runs without the auth plugin.
  const consumer = request.consumer
  if (consumer == null || consumer.kind === 'anonymous') return `ip:${addressBucket(request.ip)}`
  return consumer.kind === 'jwt' ? `jwt:${String(consumer.claims.iss ?? '')}:${consumer.id}` : `key:${consumer.id}`
}

/** A limit's `max()` failed: a configuration problem of that limit, never a store outage. */
export class LimitEvaluationError extends Error {
  readonly code = 'GATEWAY_RATE_LIMIT_MAX'
}

/**
 * Bounds many waits of one length with a single timer, instead of a timer per request: deadlines are
 * added in time order, so they expire in order, and the timer only waits for the oldest pending one.
 */
export class Deadlines {
  readonly #ms: number
  readonly #queue: Array<{ at: number, expire: (() => void) | undefined }> = []
  #head = 0
  #timer: NodeJS.Timeout | undefined

  constructor (ms: number) {
    this.#ms = ms
  }

  /** `expire` runs in `ms` unless `settle()` runs first; `settle()` is true when it was first. */
  start (expire: () => void): { settle: () => boolean } {
    const entry: { at: number, expire: (() => void) | undefined } = { at: Date.now() + this.#ms, expire }
    this.#queue.push(entry)
    if (this.#timer === undefined) this.#arm(this.#ms)
    return {
      settle () {
        const pending = entry.expire !== undefined
        entry.expire = undefined
        return pending
      }
    }
  }

  /** `promise`, or a StoreTimeoutError once `ms` have passed (`promise` is not cancelled). */
  async race<T> (promise: Promise<T>): Promise<T> {
    return await new Promise<T>((resolve, reject) => {
      const deadline = this.start(() => { reject(new StoreTimeoutError('rate-limit store too slow')) })
      promise.then((value) => { if (deadline.settle()) resolve(value) }, (error: unknown) => { if (deadline.settle()) reject(error) })
    })
  }

  #arm (ms: number): void {
    // Unreferenced: a pending request keeps the process alive, not its deadline.
    this.#timer = setTimeout(() => { this.#expire() }, ms).unref()
  }

  #expire (): void {
    this.#timer = undefined
    const queue = this.#queue
    const now = Date.now()
    while (this.#head < queue.length && (queue[this.#head].at <= now || queue[this.#head].expire === undefined)) {
      const entry = queue[this.#head++]
      const expire = entry.expire
      entry.expire = undefined
      expire?.()
    }
    if (this.#head === queue.length) {
      queue.length = 0
      this.#head = 0
      return
    }
    if (this.#head > 1024) {
      queue.splice(0, this.#head)
      this.#head = 0
    }
    this.#arm(Math.max(1, queue[this.#head].at - now))
  }
}

/**
 * A limit's RateLimit-Policy item changes only with its max (a function of the consumer for plan
 * tiers): built once per limit and max, not per request.
 */
export function createPolicyItems (): (limit: ResolvedLimit, max: number) => string {
  const items = new WeakMap<ResolvedLimit, Map<number, string>>()
  return function policyItem (limit, max) {
    let byMax = items.get(limit)
    if (byMax === undefined) {
      byMax = new Map()
      items.set(limit, byMax)
    }
    let item = byMax.get(max)
    if (item === undefined) {
      item = `"${limit.name}";q=${max};w=${Math.ceil(limit.windowMs / 1000)}`
      // Plan tiers are few; a max() returning many values must not grow this without bound.
      if (byMax.size < 64) byMax.set(max, item)
    }
    return item
  }
}
