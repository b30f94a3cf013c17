/** Validates rate-limit options and limit policies once, at registration. */
import { InvalidOptionError } from '../errors.js'
import type { Consumer, RateLimitPolicy, RateLimitRedisClient } from '../types.js'
import { toMilliseconds } from './duration.js'
import { isPlainObject, optionalObject, positiveInteger, rejectUnknownKeys } from './options.js'

export const RATE_LIMIT_DEFAULTS = Object.freeze({
  onStoreError: 'local',
  storeTimeoutMs: 100,
  storeRetryIntervalMs: 1_000,
  memoryKeys: 10_000,
  keyPrefix: 'gateway-rl:'
} as const)

export interface ResolvedLimit {
  /** Names the limit in keys, headers and logs: `consumer`, a service name, or `route`. */
  readonly name: string
  readonly max: number | ((consumer: Consumer | null) => number)
  readonly windowMs: number
  readonly by: 'consumer' | 'all'
  readonly dryRun: boolean
}

export interface ResolvedRateLimitOptions {
  readonly store: RateLimitRedisClient | undefined
  readonly perConsumer: ResolvedLimit | undefined
  readonly onStoreError: 'open' | 'closed' | 'local'
  readonly storeTimeoutMs: number
  readonly storeRetryIntervalMs: number
  readonly memoryKeys: number
  readonly legacyHeaders: boolean
  readonly keyPrefix: string
}

/** `false` stays false; an object becomes a frozen limit named `name`. */
export function resolveLimit (input: unknown, path: string, name: string): ResolvedLimit | false | undefined {
  if (input === undefined || input === false) return input
  if (!isPlainObject(input)) throw new InvalidOptionError(path, 'expected { max, window } or false')
  rejectUnknownKeys(input, ['max', 'window', 'by', 'dryRun'], path)
  if (typeof input.max !== 'function') positiveInteger(input.max, `${path}.max`, 0)
  if (input.max === undefined) throw new InvalidOptionError(`${path}.max`, 'expected a positive integer or a function of the consumer')
  if (input.by !== undefined && input.by !== 'consumer' && input.by !== 'all') throw new InvalidOptionError(`${path}.by`, 'expected "consumer" or "all"')
  if (input.dryRun !== undefined && typeof input.dryRun !== 'boolean') throw new InvalidOptionError(`${path}.dryRun`, 'expected a boolean')
  return Object.freeze({
    name,
    max: input.max as RateLimitPolicy['max'],
    windowMs: toMilliseconds(input.window, `${path}.window`),
    by: (input.by ?? 'consumer') as 'consumer' | 'all',
    dryRun: input.dryRun === true
  })
}

export function resolveRateLimitOptions (input: unknown): ResolvedRateLimitOptions {
  const options = optionalObject(input, 'rateLimit')
  rejectUnknownKeys(options, ['store', 'perConsumer', 'onStoreError', 'storeTimeout', 'storeRetryInterval', 'memoryKeys', 'legacyHeaders', 'keyPrefix'], 'rateLimit')
  if (options.store !== undefined && typeof (options.store as { defineCommand?: unknown }).defineCommand !== 'function') {
    throw new InvalidOptionError('rateLimit.store', 'expected an ioredis Redis or Cluster client')
  }
  const onStoreError = options.onStoreError ?? RATE_LIMIT_DEFAULTS.onStoreError
  if (onStoreError !== 'open' && onStoreError !== 'closed' && onStoreError !== 'local') throw new InvalidOptionError('rateLimit.onStoreError', 'expected "open", "closed" or "local"')
  const perConsumer = resolveLimit(options.perConsumer, 'rateLimit.perConsumer', 'consumer')
  if (perConsumer === false) throw new InvalidOptionError('rateLimit.perConsumer', 'leave it out instead of false')
  if (options.legacyHeaders !== undefined && typeof options.legacyHeaders !== 'boolean') throw new InvalidOptionError('rateLimit.legacyHeaders', 'expected a boolean')
  // The caller's identity in braces is the Redis Cluster hash tag of its keys: a brace in the prefix
  // would take its place and put every caller in one slot.
  if (options.keyPrefix !== undefined && (typeof options.keyPrefix !== 'string' || options.keyPrefix.length > 64 || /[{}]/.test(options.keyPrefix))) {
    throw new InvalidOptionError('rateLimit.keyPrefix', 'expected a string of at most 64 characters, without { or }')
  }
  return Object.freeze({
    store: options.store as RateLimitRedisClient | undefined,
    perConsumer,
    onStoreError,
    storeTimeoutMs: options.storeTimeout === undefined ? RATE_LIMIT_DEFAULTS.storeTimeoutMs : toMilliseconds(options.storeTimeout, 'rateLimit.storeTimeout'),
    storeRetryIntervalMs: options.storeRetryInterval === undefined ? RATE_LIMIT_DEFAULTS.storeRetryIntervalMs : toMilliseconds(options.storeRetryInterval, 'rateLimit.storeRetryInterval'),
    memoryKeys: positiveInteger(options.memoryKeys, 'rateLimit.memoryKeys', RATE_LIMIT_DEFAULTS.memoryKeys),
    legacyHeaders: options.legacyHeaders === true,
    keyPrefix: (options.keyPrefix as string | undefined) ?? RATE_LIMIT_DEFAULTS.keyPrefix
  })
}
