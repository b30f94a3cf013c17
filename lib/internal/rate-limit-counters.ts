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

/**
 * Counters in Redis: one `EVALSHA` increments every key of a batch and returns `[count, ttl, …]`.
 * A batch must share a hash slot in a Redis Cluster: the plugin puts the caller's identity in
 * braces, so all personal limits of one caller hash alike.
 */
export class RedisCounters {
  readonly #hit: HitCommand

  constructor (client: RateLimitRedisClient) {
    const commands = client as unknown as Record<string, HitCommand | undefined>
    if (typeof commands[COMMAND] !== 'function') client.defineCommand(COMMAND, { lua: HIT_SCRIPT })
    this.#hit = (commands[COMMAND] as HitCommand).bind(client)
  }

  /** Counts one hit of each key (windows in ms, in the same order); resolves to `[count, ttl, …]`. */
  async hit (keys: readonly string[], windowsMs: readonly number[]): Promise<number[]> {
    return await this.#hit(keys.length, ...keys, ...windowsMs)
  }
}

/** The client address as a bucket: lower-cased, IPv4-mapped IPv6 as IPv4, other IPv6 by its /64. */
export function addressBucket (ip: string): string {
  if (!isIPv6(ip)) return ip.toLowerCase()
  const address = new Address6(ip)
  if (address.isMapped4()) return address.to4().correctForm()
  return new Address6(`${ip}/64`).startAddress().correctForm()
}
