/**
 * The pieces of the rate-limit plugin that do not hold its state: the bucket of a caller, the
 * readiness ping's time bound and the RateLimit-Policy items.
 */
import type { FastifyRequest } from 'fastify'
import { addressBucket, StoreTimeoutError } from './rate-limit-counters.js'
import type { ResolvedLimit } from './rate-limit-options.js'
import type { Consumer } from '../types.js'

// By consumer object: auth caches consumers (per verified token, per API key), so the same string
// comes back, with its hash computed once, instead of a new string to flatten and hash per request.
const identities = new WeakMap<Consumer, string>()

/**
 * The bucket of a caller: the verified consumer, namespaced by where its id comes from (the same
 * `sub` at two issuers is two people), else the client IP as trustProxy sees it (IPv6 by /64).
 */
export function identityOf (request: FastifyRequest): string {
  // `consumer` is undefined when the gateway runs without the auth plugin.
  const consumer = request.consumer
  if (consumer == null || consumer.kind === 'anonymous') return `ip:${addressBucket(request.ip)}`
  let identity = identities.get(consumer)
  if (identity === undefined) {
    identity = consumer.kind === 'jwt' ? `jwt:${String(consumer.claims.iss ?? '')}:${consumer.id}` : `key:${consumer.id}`
    identities.set(consumer, identity)
  }
  return identity
}

/** A limit's `max()` failed: a configuration problem of that limit, never a store outage. */
export class LimitEvaluationError extends Error {
  readonly code = 'GATEWAY_RATE_LIMIT_MAX'
}

/** `promise`, or a StoreTimeoutError once `ms` have passed (`promise` is not cancelled). */
export async function withinStoreTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => { reject(new StoreTimeoutError('rate-limit store too slow')) }, ms).unref()
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
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
