/**
 * API-key verification. Keys are compared by SHA-256 digest (a Map lookup on the digest leaks
 * nothing about the key); lookups through the caller's function are cached briefly, bounded, and
 * bounded in time.
 */
import { createHash } from 'node:crypto'
import type { ApiKeyConsumer, Consumer } from '../types.js'
import { BoundedCache } from './bounded-cache.js'

export interface ResolvedApiKeyOptions {
  header: string
  query: string | undefined
  keys: ReadonlyMap<string, ApiKeyConsumer> | undefined
  lookup: ((key: string) => Promise<ApiKeyConsumer | null | undefined>) | undefined
  cacheTtlMs: number
  cacheSize: number
  lookupTimeoutMs: number
}

const MAX_KEY_LENGTH = 512

/** The lookup failed or timed out: the credential cannot be checked now (→ 503). */
export class KeyLookupUnavailableError extends Error {
  readonly code = 'GATEWAY_API_KEY_LOOKUP_UNAVAILABLE'
}

export function sha256Hex (value: string): string {
  return createHash('sha256').update(value).digest('hex')
}

// RFC 6749 § 3.3 scope-token: a space would split one scope into two in x-consumer-scopes.
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/
const CONSUMER_ID = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/

/** Throws for a consumer whose id could not be sent upstream in a header. */
export function toConsumer (found: ApiKeyConsumer): Consumer {
  if (typeof found?.id !== 'string' || !CONSUMER_ID.test(found.id)) throw new TypeError('API-key consumer id must be 1–256 printable ASCII characters')
  return Object.freeze({
    id: found.id,
    kind: 'api-key',
    scopes: Object.freeze((found.scopes ?? []).filter((scope) => typeof scope === 'string' && SCOPE_TOKEN.test(scope))),
    claims: Object.freeze({ ...found.claims })
  })
}

async function withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new KeyLookupUnavailableError('API-key lookup timed out')), ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}

/** Returns the consumer for `key`, or null for an unknown key. */
export function createApiKeyVerifier (options: ResolvedApiKeyOptions): (key: string) => Consumer | null | Promise<Consumer | null> {
  const staticConsumers = options.keys === undefined
    ? undefined
    : new Map([...options.keys].map(([digest, found]) => [digest, toConsumer(found)]))
  const cache = new BoundedCache<string, Consumer | null>(options.cacheSize)
  // One lookup in flight per key: a burst with one key is one database query. Bounded by `cacheSize`.
  const inflight = new Map<string, Promise<Consumer | null>>()
  const lookup = options.lookup

  return function verifyApiKey (key: string): Consumer | null | Promise<Consumer | null> {
    if (key.length === 0 || key.length > MAX_KEY_LENGTH) return null
    const digest = sha256Hex(key)
    const known = staticConsumers?.get(digest)
    if (known !== undefined || lookup === undefined) return known ?? null
    const cached = cache.get(digest)
    if (cached !== undefined) return cached
    const pending = inflight.get(digest)
    if (pending !== undefined) return pending
    if (inflight.size >= options.cacheSize) return Promise.reject(new KeyLookupUnavailableError('too many API-key lookups in flight'))
    const looked = withTimeout(Promise.resolve().then(() => lookup(key)), options.lookupTimeoutMs).then(
      (found) => {
        const consumer = found === null || found === undefined ? null : toConsumer(found)
        cache.set(digest, consumer, Date.now() + options.cacheTtlMs)
        return consumer
      },
      (error: unknown) => {
        throw error instanceof KeyLookupUnavailableError ? error : new KeyLookupUnavailableError('API-key lookup failed', { cause: error })
      }).finally(() => { inflight.delete(digest) })
    inflight.set(digest, looked)
    return looked
  }
}
