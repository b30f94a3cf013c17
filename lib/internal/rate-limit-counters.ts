/**
 * The counters behind the rate-limit plugin: fixed windows that start at a key's first hit, in this
 * process's memory (synchronous, no promise per check) or in Redis (every limit of a request in one
 * script call, one round trip). Both answer the same thing: the count after this hit and the time
 * left in its window.
 */
import { isIPv6 } from 'node:net'
import { Address6 } from 'ip-address'
import type { RateLimitRedisClient } from '../types.js'

/** One counter's window, live: read it before the next hit of the same key. */
export interface Window {
  count: number
  /** Date.now() at which the window ends. */
  resetAt: number
}

/**
 * Counters of one limit in memory: at most `maxKeys`, the least recently hit evicted first (a Map
 * keeps insertion order; a hit re-inserts its key).
 */
export class MemoryCounters {
  readonly #windows = new Map<string, Window>()
  readonly #maxKeys: number

  constructor (maxKeys: number) {
    this.#maxKeys = maxKeys
  }

  get size (): number {
    return this.#windows.size
  }

  /** Counts one hit of `key`; the window returned is live, read it at once. */
  hit (key: string, windowMs: number, now: number): Window {
    const windows = this.#windows
    let window = windows.get(key)
    if (window === undefined) {
      window = { count: 0, resetAt: now + windowMs }
      if (windows.size >= this.#maxKeys) windows.delete(windows.keys().next().value as string)
    } else {
      windows.delete(key)
      if (window.resetAt <= now) {
        window.count = 0
        window.resetAt = now + windowMs
      }
    }
    window.count++
    windows.set(key, window)
    return window
  }
}

const HIT_SCRIPT = `
local out = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[i])
  local count = redis.call('INCR', key)
  local ttl = window
  if count == 1 then
    redis.call('PEXPIRE', key, window)
  else
    ttl = redis.call('PTTL', key)
    -- A key without an expiry (written by hand, or an expiry lost): give it this window.
    if ttl < 0 then
      redis.call('PEXPIRE', key, window)
      ttl = window
    end
  end
  out[2 * i - 1] = count
  out[2 * i] = ttl
end
return out
`
const COMMAND = 'fastifyGatewayHit'

type HitCommand = (...args: Array<string | number>) => Promise<number[]>
/** `hits` holds `[count, ttl]` pairs; this caller's are at `offset` (in pairs). Must not throw. */
export type HitCallback = (error: Error | undefined, hits: readonly number[], offset: number) => void

/** The store did not answer within `storeTimeout`. */
export class StoreTimeoutError extends Error {
  readonly code = 'GATEWAY_RATE_LIMIT_STORE_TIMEOUT'
}

interface Batch {
  readonly keys: string[]
  readonly windows: number[]
  readonly callers: Array<{ offset: number, done: HitCallback }>
  /** From the batch's first hit: every caller hears back within the timeout of its own hit. */
  timer: NodeJS.Timeout | undefined
  settled: boolean
}

// A script call's keys are bounded: a burst is split into calls of at most this many.
const MAX_KEYS_PER_CALL = 512

/**
 * Counters in Redis. The hits of every request of one event-loop turn are sent as one `EVALSHA`
 * that increments all their keys in order (a key hit twice is counted twice: each caller gets its
 * own count) and returns `[count, ttl, …]`: one command, one round trip and one reply to parse per
 * turn instead of one per limit and request. In a Redis Cluster a script's keys must share a slot,
 * so there the batches are per caller (the plugin puts the caller's identity in braces, the hash tag).
 * Each batch has one timer: its callers get a StoreTimeoutError when the store takes longer than
 * `timeoutMs`, and a late reply is dropped.
 */
export class RedisCounters {
  readonly #hit: HitCommand
  readonly #perCaller: boolean
  readonly #timeoutMs: number
  #batches = new Map<string, Batch>()
  #scheduled = false

  constructor (client: RateLimitRedisClient, timeoutMs: number) {
    this.#timeoutMs = timeoutMs
    const commands = client as unknown as Record<string, HitCommand | undefined>
    if (typeof commands[COMMAND] !== 'function') client.defineCommand(COMMAND, { lua: HIT_SCRIPT })
    this.#hit = (commands[COMMAND] as HitCommand).bind(client)
    this.#perCaller = (client as { isCluster?: unknown }).isCluster === true
  }

  /** Counts one hit of each key (in one slot: `tag` is their hash tag), windows in ms in the same order. */
  hit (tag: string, keys: readonly string[], windowsMs: readonly number[], done: HitCallback): void {
    const group = this.#perCaller ? tag : ''
    let batch = this.#batches.get(group)
    if (batch !== undefined && batch.keys.length + keys.length > MAX_KEYS_PER_CALL) {
      this.#batches.delete(group)
      this.#send(batch)
      batch = undefined
    }
    if (batch === undefined) {
      const created: Batch = { keys: [], windows: [], callers: [], timer: undefined, settled: false }
      // Unreferenced: a pending request keeps the process alive, not its deadline.
      created.timer = setTimeout(() => { this.#settle(created, new StoreTimeoutError('rate-limit store too slow'), []) }, this.#timeoutMs).unref()
      this.#batches.set(group, created)
      batch = created
    }
    batch.callers.push({ offset: batch.keys.length, done })
    for (let i = 0; i < keys.length; i++) {
      batch.keys.push(keys[i])
      batch.windows.push(windowsMs[i])
    }
    if (!this.#scheduled) {
      this.#scheduled = true
      // After the poll phase: every request whose bytes arrived in this turn has been counted in.
      setImmediate(() => { this.#flush() })
    }
  }

  #flush (): void {
    this.#scheduled = false
    const batches = this.#batches
    // A new Map, not clear(): with clear() on this long-lived Map, every batch (and through its
    // callbacks every waiting request) survived the young-generation GC and was promoted (V8 keeps a
    // cleared table for live iterators). Measured under load: 25–40 ms scavenges every ~200 ms and
    // the old space growing 13 MB each time, against 1–2 ms and flat with a new Map and these
    // per-batch timers (a queue of per-request deadline entries had the same effect).
    this.#batches = new Map()
    for (const batch of batches.values()) this.#send(batch)
  }

  #send (batch: Batch): void {
    if (batch.settled) return // timed out before its turn came: its callers have their answer
    const fail = (error: unknown): void => { this.#settle(batch, error instanceof Error ? error : new Error(String(error)), []) }
    let sent: Promise<number[]>
    try {
      sent = this.#hit(batch.keys.length, ...batch.keys, ...batch.windows)
    } catch (error) {
      // A client that throws instead of rejecting (closed, misconfigured) fails the batch, not the process.
      fail(error)
      return
    }
    sent.then((hits) => { this.#settle(batch, undefined, hits) }, fail)
  }

  /** The batch's one answer: its hits, the store's error, or the timeout, whichever comes first. */
  #settle (batch: Batch, error: Error | undefined, hits: readonly number[]): void {
    if (batch.settled) return
    batch.settled = true
    clearTimeout(batch.timer)
    for (const caller of batch.callers) caller.done(error, hits, caller.offset)
  }
}

/** The client address as a bucket: lower-cased, IPv4-mapped IPv6 as IPv4, other IPv6 by its /64. */
export function addressBucket (ip: string): string {
  if (!isIPv6(ip)) return ip.toLowerCase()
  const address = new Address6(ip)
  if (address.isMapped4()) return address.to4().correctForm()
  return new Address6(`${ip}/64`).startAddress().correctForm()
}
