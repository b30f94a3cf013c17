// The counters behind the rate-limit plugin, against a real Redis: the hits of one event-loop turn
// are one script call, every caller gets its own count, and the memory map stays within its bound.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { getHeapSpaceStatistics } from 'node:v8'
import { Redis } from 'ioredis'
import { MemoryCounters, RedisCounters, type HitCallback } from '../../lib/internal/rate-limit-counters.js'
import { startTestRedis } from '../../lib/testing/index.js'

const redis = await startTestRedis()
const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1 })
t.teardown(async () => {
  client.disconnect()
  await redis.stop()
})
await new Promise((resolve) => client.once('ready', resolve))

/** Script calls (EVAL and EVALSHA) Redis has run so far. */
async function scriptCalls (): Promise<number> {
  const info = await client.info('commandstats')
  return [...info.matchAll(/^cmdstat_(?:eval|evalsha):calls=(\d+)/gm)].reduce((sum, match) => sum + Number(match[1]), 0)
}

function hitAsync (counters: RedisCounters, tag: string, keys: string[], windows: number[]): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const done: HitCallback = (error, hits, offset) => {
      if (error !== undefined) reject(error)
      else resolve(keys.flatMap((_key, i) => [hits[2 * (offset + i)], hits[2 * (offset + i) + 1]]))
    }
    counters.hit(tag, keys, windows, done)
  })
}

t.test('the hits of one turn are one script call; a key hit by several callers counts each of them', async (t) => {
  const counters = new RedisCounters(client, 1000)
  const prefix = `c-${randomUUID()}:`
  await hitAsync(counters, 'warm', [`${prefix}{warm}:x`], [60_000]) // loads the script
  const before = await scriptCalls()
  const callers = Array.from({ length: 30 }, (_, i) => hitAsync(counters, `u${i % 3}`, [`${prefix}{u${i % 3}}:consumer`, `${prefix}{all}:service`], [60_000, 1_000]))
  const results = await Promise.all(callers)
  t.equal(await scriptCalls() - before, 1, 'one script call for 30 requests')
  for (let user = 0; user < 3; user++) {
    const counts = results.filter((_result, i) => i % 3 === user).map((result) => result[0])
    t.same(counts, Array.from({ length: 10 }, (_, i) => i + 1), `caller u${user}: counts 1…10, one each`)
  }
  t.same(results.map((result) => result[2]), Array.from({ length: 30 }, (_, i) => i + 1), 'the shared key: 1…30')
  t.ok(results.every((result) => result[1] > 59_000 && result[1] <= 60_000), 'the time left of a 1 min window')
  t.ok(results.every((result) => result[3] > 0 && result[3] <= 1_000), 'the time left of a 1 s window')
  t.ok(await client.pttl(`${prefix}{all}:service`) > 0, 'keys expire with their window')
})

t.test('a burst beyond one call\'s key bound is split, and still counted exactly', async (t) => {
  const counters = new RedisCounters(client, 1000)
  const key = `c-${randomUUID()}:{burst}:consumer`
  await hitAsync(counters, 'burst', [`${key}-warm`], [60_000])
  const before = await scriptCalls()
  const results = await Promise.all(Array.from({ length: 1200 }, async () => await hitAsync(counters, 'burst', [key], [60_000])))
  t.equal(await scriptCalls() - before, 3, '1,200 keys → 3 calls of at most 512')
  t.same(results.map((result) => result[0]).sort((a, b) => a - b), Array.from({ length: 1200 }, (_, i) => i + 1))
  t.equal(await client.get(key), '1200')
})

t.test('a failed call fails every caller of its batch', async (t) => {
  const other = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true })
  other.on('error', () => {})
  const counters = new RedisCounters(other, 1000) // never connected: every command fails at once
  const outcomes = await Promise.allSettled([hitAsync(counters, 'a', ['x:{a}:1'], [1_000]), hitAsync(counters, 'b', ['x:{b}:1'], [1_000])])
  t.same(outcomes.map((outcome) => outcome.status), ['rejected', 'rejected'])
  other.disconnect()
})

t.test('memory counters: a fixed window from the first hit, the least recently hit evicted at the bound', async (t) => {
  const counters = new MemoryCounters(3)
  t.same({ ...counters.hit('a', 1_000, 0) }, { count: 1, resetAt: 1_000 })
  t.same({ ...counters.hit('a', 1_000, 999) }, { count: 2, resetAt: 1_000 })
  t.same({ ...counters.hit('a', 1_000, 1_000) }, { count: 1, resetAt: 2_000 }, 'a new window once the old one ended')
  counters.hit('b', 1_000, 1_000)
  counters.hit('c', 1_000, 1_000)
  counters.hit('a', 1_000, 1_001) // a is now the most recent
  counters.hit('d', 1_000, 1_002) // evicts b, the least recently hit
  t.equal(counters.size, 3)
  t.equal(counters.hit('a', 1_000, 1_003).count, 3, 'a kept its count')
  t.equal(counters.hit('b', 1_000, 1_003).count, 1, 'b was evicted and starts over')
})

t.test('a client that throws instead of rejecting fails its batch, not the process', async (t) => {
  const throwing = {
    defineCommand () {},
    fastifyGatewayHit () { throw new Error('client closed') }
  }
  const counters = new RedisCounters(throwing as never, 1000)
  const outcome = await Promise.allSettled([hitAsync(counters, 'a', ['x:{a}:1'], [1_000])])
  t.equal(outcome[0].status, 'rejected')
  t.match((outcome[0] as PromiseRejectedResult).reason, { message: 'client closed' })
})

t.test('a store slower than the timeout: every caller of the batch gets a StoreTimeoutError in time, and the late reply is dropped', async (t) => {
  let answer: ((hits: number[]) => void) | undefined
  const slow = {
    defineCommand () {},
    fastifyGatewayHit: async () => await new Promise<number[]>((resolve) => { answer = resolve })
  }
  const counters = new RedisCounters(slow as never, 50)
  const calls: Array<{ error: Error | undefined, at: number }> = []
  const started = Date.now()
  const finished = new Promise<void>((resolve) => {
    const done: HitCallback = (error) => {
      calls.push({ error, at: Date.now() - started })
      if (calls.length === 2) resolve()
    }
    counters.hit('a', ['x:{a}:1'], [1_000], done)
    counters.hit('b', ['x:{b}:1'], [1_000], done)
  })
  await finished
  t.same(calls.map((call) => call.error?.constructor.name), ['StoreTimeoutError', 'StoreTimeoutError'])
  t.same(calls.map((call) => (call.error as { code?: string }).code), ['GATEWAY_RATE_LIMIT_STORE_TIMEOUT', 'GATEWAY_RATE_LIMIT_STORE_TIMEOUT'])
  t.ok(calls.every((call) => call.at >= 45 && call.at < 500), `answered after the 50 ms timeout: ${calls.map((call) => call.at).join(', ')} ms`)
  t.type(answer, 'function', 'the call went out')
  answer?.([1, 1000, 1, 1000])
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(calls.length, 2, 'the late reply reaches nobody')
})

t.test('batches do not outlive their turn: the callers waiting on them are not promoted wholesale', async (t) => {
  // A store answering on the next turn, and 50 callers at a time that each hold ~2 KB. With the
  // batches kept in one long-lived Map emptied by clear() (or a queue of per-request deadlines),
  // every caller survived the young-generation GC and piled up in the old space until a full GC:
  // under load, 25–40 ms scavenges and 13 MB promoted each time.
  const quick = {
    defineCommand () {},
    fastifyGatewayHit: async (n: number) => await new Promise<number[]>((resolve) => setImmediate(() => { resolve(Array.from({ length: 2 * n }, (_, i) => i % 2 === 0 ? 1 : 60_000)) }))
  }
  const counters = new RedisCounters(quick as never, 1000)
  const oldSpace = (): number => getHeapSpaceStatistics().find((space) => space.space_name === 'old_space')?.space_used_size ?? 0
  let running = true
  let served = 0
  function caller (): void {
    const held = Array.from({ length: 250 }, (_, i) => ({ i }))
    counters.hit('u', ['x:{u}:consumer', 'x:{u}:service'], [60_000, 60_000], () => {
      served += held.length > 0 ? 1 : 0
      if (running) setImmediate(caller)
    })
  }
  for (let i = 0; i < 50; i++) caller()
  await sleep(300) // warm up
  const before = oldSpace()
  let peak = before
  // The peak, sampled: a full GC in between would hide the growth from a single reading at the end.
  const sampler = setInterval(() => { peak = Math.max(peak, oldSpace()) }, 20)
  await sleep(1_500)
  running = false
  clearInterval(sampler)
  const grown = peak - before
  t.ok(served > 10_000, `served ${served} callers in 1.5 s`)
  // Measured: 20–30 MiB with a new Map per turn; 245 MiB with clear().
  t.ok(grown < 100 * 2 ** 20, `the old space grew by at most ${(grown / 2 ** 20).toFixed(1)} MiB (< 100 MiB)`)
})
