// Scale-out (issue #10): three gateway processes share one Redis, and a per-consumer limit holds
// exactly across them — not 3 × max — with requests spread round-robin and 30 in flight.
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { createTestUpstream, startTestRedis } from '../../lib/testing/index.js'
import { spread, startGateways, stopProcess, tally } from '../helpers/gateway-processes.js'

t.test('3 instances, one Redis, max = 100 per minute: 300 requests from one consumer → exactly 100 admitted', async (t) => {
  const redis = await startTestRedis()
  const upstream = await createTestUpstream()
  const keyPrefix = `scale-${randomUUID()}:`
  // closed: a store failure cannot pass for a correct count made in one instance's memory. Timeouts
  // of 1 s: this test is about exact counts, not latency, and must not fail because the 2 shared
  // cores are busy (a store timeout would still show up, as a 503).
  const instances = await startGateways(3, {
    REDIS_URL: redis.url, UPSTREAM_URL: upstream.url, KEY_PREFIX: keyPrefix, ON_STORE_ERROR: 'closed', MAX: '100', COMMAND_TIMEOUT: '1000', STORE_TIMEOUT: '1000'
  })
  t.teardown(async () => {
    await Promise.all(instances.map(async (instance) => await stopProcess(instance.child)))
    await upstream.close()
    await redis.stop()
  })

  const started = performance.now()
  const answers = await spread(instances.map((instance) => instance.port), 300, 30)
  const elapsed = performance.now() - started

  t.same(tally(answers), { 200: 100, '429 GATEWAY_ERR_RATE_LIMITED': 200 }, 'exactly 100 admitted, 200 refused as rate limited')
  t.equal(upstream.requests.length, 100, 'the upstream received exactly 100')
  for (let instance = 0; instance < 3; instance++) {
    t.equal(answers.filter((answer) => answer.instance === instance).length, 100, `instance ${instance} answered its 100`)
  }
  // Every instance admitted some: the 100 were counted in Redis, not by whichever instance came first.
  const admittedBy = [0, 1, 2].map((instance) => answers.filter((answer) => answer.instance === instance && answer.status === 200).length)
  t.ok(admittedBy.every((count) => count > 0), `admitted per instance: ${admittedBy.join(', ')}`)
  const slowest = Math.max(...answers.map((answer) => answer.ms))
  t.comment(`300 requests in ${elapsed.toFixed(0)} ms; slowest ${slowest.toFixed(1)} ms; admitted per instance ${admittedBy.join('/')}`)

  const exits = await Promise.all(instances.map(async (instance) => await stopProcess(instance.child)))
  t.same(exits, [{ code: 0, signal: null }, { code: 0, signal: null }, { code: 0, signal: null }], 'every instance exits 0 on SIGTERM', {
    output: instances.map((instance) => instance.output()).join('\n')
  })
})
