// Scale-out on Redis Cluster (issue #10): three gateway processes on a local 3-master cluster
// (ioredis `Cluster`) share a per-consumer limit exactly; when the master holding the slot of a
// consumer over its limit is killed mid-run, every request still gets an answer — per
// `onStoreError` — within a bounded time, and keeps getting one after the cluster declares itself down.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis } from 'ioredis'
import { createTestUpstream, startTestRedisCluster, type TestRedisCluster } from '../../lib/testing/index.js'
import { spread, startGateways, stopProcess, tally, type Answer, type GatewayProcess } from '../helpers/gateway-processes.js'

const NODE_TIMEOUT_MS = 2_000 // cluster-node-timeout: how long until the other masters mark the dead one failed
const STORE_TIMEOUT_MS = 250 // the plugin's storeTimeout (default 100 ms; raised for the busy 2 shared cores)
const COMMAND_TIMEOUT_MS = 200 // ioredis commandTimeout on every cluster node
// A bound far above the expected ~storeTimeout, yet far below any hang: on 2 shared cores, three
// gateways, the cluster and this process compete, and a cold connection adds tens of ms.
const LATENCY_BOUND_MS = 1_000
// The engine's key for the per-consumer limit of the HS256 consumer of spread() (see docs/rate-limit.md § Keys).
// The caller's identity is the hash tag: all its personal limits share one slot, one script call.
const counterKey = (prefix: string, limit = 'consumer'): string => `${prefix}{jwt::consumer-1}:${limit}`

interface Env {
  cluster: TestRedisCluster
  client: Cluster
  instances: GatewayProcess[]
  upstream: Awaited<ReturnType<typeof createTestUpstream>>
  keyPrefix: string
}

async function setup (t: Test, onStoreError: 'local' | 'closed', timeouts = { command: COMMAND_TIMEOUT_MS, store: STORE_TIMEOUT_MS }, extra: Record<string, string> = {}): Promise<Env> {
  const cluster = await startTestRedisCluster({ masters: 3, nodeTimeout: NODE_TIMEOUT_MS })
  const upstream = await createTestUpstream()
  const client = new Cluster([...cluster.nodes], { enableOfflineQueue: false, redisOptions: { commandTimeout: 1_000, maxRetriesPerRequest: 1 } })
  client.on('error', () => {}) // the test kills a master on purpose
  const instances: GatewayProcess[] = []
  t.teardown(async () => {
    await Promise.all(instances.map(async (instance) => await stopProcess(instance.child)))
    client.disconnect()
    await upstream.close()
    await cluster.close()
  })
  const keyPrefix = `cluster-${randomUUID()}:`
  instances.push(...await startGateways(3, {
    REDIS_CLUSTER: cluster.nodes.map(({ host, port }) => `${host}:${port}`).join(','),
    UPSTREAM_URL: upstream.url,
    KEY_PREFIX: keyPrefix,
    ON_STORE_ERROR: onStoreError,
    COMMAND_TIMEOUT: String(timeouts.command),
    STORE_TIMEOUT: String(timeouts.store),
    MAX: '100',
    ...extra
  }))
  return { cluster, client, instances, upstream, keyPrefix }
}

/** Index in `cluster.nodes` of the master that owns `key`'s slot. */
async function ownerOf (env: Env, key: string): Promise<number> {
  const slot = await env.client.cluster('KEYSLOT', key) as number
  const ranges = await env.client.cluster('SLOTS')
  const range = ranges.find(([from, to]) => slot >= from && slot <= to)
  const index = env.cluster.nodes.findIndex(({ port }) => port === range?.[2]?.[1])
  if (index === -1) throw new Error(`no master owns slot ${slot}`)
  return index
}

function latencies (answers: readonly Answer[]): string {
  const sorted = answers.map((answer) => answer.ms).sort((a, b) => a - b)
  const at = (q: number): string => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1)
  return `p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms`
}

t.test('3 instances, 3-master cluster, max = 100 per minute: 300 requests from one consumer → exactly 100 admitted', async (t) => {
  // closed: a store failure cannot pass for a correct count. Timeouts of 1 s: this one is about exact
  // counts, not latency (a store timeout would still show up, as a 503).
  const env = await setup(t, 'closed', { command: 1_000, store: 1_000 })
  const answers = await spread(env.instances.map((instance) => instance.port), 300, 30)
  t.same(tally(answers), { 200: 100, '429 GATEWAY_ERR_RATE_LIMITED': 200 }, 'exactly 100 admitted, 200 refused as rate limited')
  t.equal(env.upstream.requests.length, 100, 'the upstream received exactly 100')
  t.equal(await env.client.get(counterKey(env.keyPrefix)), '300', 'all 300 counted in one key of the cluster')
  t.ok(await env.client.pttl(counterKey(env.keyPrefix)) > 0, 'the counter expires with its window')
  t.comment(`latency: ${latencies(answers)}`)
})

t.test('a consumer limit and a service limit in a cluster: both counted by one script call in the caller\'s slot, exactly', async (t) => {
  // The service allows 60 per consumer, the consumer limit 100: the service limit decides. Both keys
  // of the caller carry its identity as hash tag; a CROSSSLOT refusal would be a 503 under closed.
  const env = await setup(t, 'closed', { command: 1_000, store: 1_000 }, { SERVICE_MAX: '60' })
  const answers = await spread(env.instances.map((instance) => instance.port), 150, 30)
  t.same(tally(answers), { 200: 60, '429 GATEWAY_ERR_RATE_LIMITED': 90 }, 'exactly 60 admitted by the service limit')
  t.equal(env.upstream.requests.length, 60, 'the upstream received exactly 60')
  t.equal(await env.client.get(counterKey(env.keyPrefix)), '150', 'the consumer counter saw all 150')
  t.equal(await env.client.get(counterKey(env.keyPrefix, 'service:api')), '150', 'the service counter saw all 150')
  t.equal(await env.client.cluster('KEYSLOT', counterKey(env.keyPrefix)), await env.client.cluster('KEYSLOT', counterKey(env.keyPrefix, 'service:api')), 'one slot')
})

for (const onStoreError of ['local', 'closed'] as const) {
  t.test(`onStoreError "${onStoreError}": the master holding the consumer's slot killed mid-run → every request answered in bounded time`, async (t) => {
    const env = await setup(t, onStoreError)
    const ports = env.instances.map((instance) => instance.port)
    const victim = await ownerOf(env, counterKey(env.keyPrefix))

    // 1. The consumer is over its limit in the cluster: 150 counted, as if by earlier requests (the
    //    exact count through the gateways is the test above, with timeouts that a busy machine
    //    cannot trip). The gateways warm up on another consumer.
    await env.client.set(counterKey(env.keyPrefix), '150', 'PX', 60_000)
    await spread(ports, 30, 30, undefined, 'warm-up')
    const warmedUp = env.upstream.requests.length

    // 2. 150 requests, the victim killed once 30 are sent: answers counted in the cluster are 429;
    //    those decided by the failure policy are 200 (local: fresh per-instance counters that cannot
    //    reach 100) or 503 (closed).
    let killedAt = 0
    const during = await spread(ports, 150, 30, async (i) => {
      if (i !== 30) return
      await env.cluster.kill(victim)
      killedAt = performance.now()
    })
    const policy = onStoreError === 'local' ? '200' : '503 GATEWAY_ERR_RATE_LIMIT_STORE'
    const counts = tally(during)
    t.same(Object.keys(counts).filter((key) => key !== policy && key !== '429 GATEWAY_ERR_RATE_LIMITED'), [], `every answer is 429 or ${policy}`, { counts })
    t.equal(during.length, 150, 'all 150 answered')
    t.ok((counts['429 GATEWAY_ERR_RATE_LIMITED'] ?? 0) >= 1, `counted in the cluster before the kill: ${counts['429 GATEWAY_ERR_RATE_LIMITED'] ?? 0} × 429`)
    t.ok((counts[policy] ?? 0) >= 90, `at least the 90 sent after the kill and after the 30 in flight got the policy (${counts[policy] ?? 0})`)
    t.equal(env.upstream.requests.length - warmedUp, onStoreError === 'local' ? (counts[200] ?? 0) : 0, 'only policy-admitted requests reached the upstream')
    const slowest = Math.max(...during.map((answer) => answer.ms))
    t.ok(slowest < LATENCY_BOUND_MS, `no hang: slowest answer ${slowest.toFixed(1)} ms (< ${LATENCY_BOUND_MS})`)
    t.comment(`during the kill (${victim}): ${JSON.stringify(counts)}; ${latencies(during)}`)

    // 3. Past cluster-node-timeout the survivors mark the victim failed and the whole cluster refuses
    //    commands (CLUSTERDOWN, cluster-require-full-coverage yes): still the policy, still bounded.
    const waitMs = NODE_TIMEOUT_MS * 2 + 1_000 - (performance.now() - killedAt)
    if (waitMs > 0) await sleep(waitMs)
    const survivor = new Redis(env.cluster.nodes[(victim + 1) % 3].port, '127.0.0.1', { commandTimeout: 1_000, maxRetriesPerRequest: 0 })
    t.match(await survivor.cluster('INFO') as string, /cluster_state:fail/, 'a surviving master reports the cluster down')
    survivor.disconnect()
    const after = await spread(ports, 60, 30)
    t.same(tally(after), { [policy]: 60 }, `after the cluster is down: all 60 get ${policy}`)
    const slowestAfter = Math.max(...after.map((answer) => answer.ms))
    t.ok(slowestAfter < LATENCY_BOUND_MS, `slowest answer ${slowestAfter.toFixed(1)} ms`)
    t.comment(`cluster down: ${latencies(after)}`)
  })
}
