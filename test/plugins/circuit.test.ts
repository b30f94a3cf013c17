// The breaker's state machine on its own (lib/internal/circuit.ts): when it opens, the one probe of
// half-open, and the two places it deliberately differs from opossum.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Circuit, NotCountedError, REFUSED, type CircuitState } from '../../lib/internal/circuit.js'

const policy = { errorThresholdPercentage: 50, resetTimeoutMs: 40, volumeThreshold: 4, rollingWindowMs: 10_000 }
const failure = new Error('upstream answered 503')

function circuit (): { circuit: Circuit, transitions: CircuitState[] } {
  const transitions: CircuitState[] = []
  const created = new Circuit(policy, (state) => { transitions.push(state) })
  t.teardown(() => { created.shutdown() })
  return { circuit: created, transitions }
}

t.test('opens only with volumeThreshold calls in the window and failures strictly above the threshold', async (t) => {
  const { circuit: c, transitions } = circuit()
  for (const outcome of [failure, failure, failure]) c.record(c.tryCall(), outcome)
  t.equal(c.state, 'closed', '3 failures, fewer calls than volumeThreshold (4)')
  c.record(c.tryCall(), undefined)
  t.equal(c.state, 'closed', '3 of 4 failed, but the decision is taken at a failure')
  c.record(c.tryCall(), failure)
  t.equal(c.state, 'open', '4 of 5 failed (80 % > 50 %)')
  t.equal(c.tryCall(), REFUSED, 'open: refused')
  t.same(transitions, ['open'])
  t.ok(c.retryAfterSeconds() >= 1)
})

t.test('exactly at the threshold it stays closed', async (t) => {
  const { circuit: c } = circuit()
  for (const outcome of [undefined, undefined, failure, failure]) c.record(c.tryCall(), outcome)
  t.equal(c.state, 'closed', '2 of 4 = 50 %, not above 50 %')
})

t.test('half-open lets one probe through; its success closes with an empty window', async (t) => {
  const { circuit: c, transitions } = circuit()
  for (let i = 0; i < 4; i++) c.record(c.tryCall(), failure)
  t.equal(c.state, 'open')
  await sleep(60)
  t.equal(c.state, 'half-open', 'after resetTimeout')
  const probe = c.tryCall()
  t.not(probe, REFUSED, 'the probe')
  t.equal(c.tryCall(), REFUSED, 'a second call while the probe is out')
  c.record(probe, undefined)
  t.equal(c.state, 'closed')
  // opossum kept the four failures in its window: one more failure would have reopened it.
  for (let i = 0; i < 3; i++) c.record(c.tryCall(), failure)
  t.equal(c.state, 'closed', 'the failures that opened it are not counted again')
  t.same(transitions, ['open', 'half-open', 'closed'])
})

t.test('a failed probe, or one that never reached the upstream, reopens', async (t) => {
  for (const outcome of [failure, new NotCountedError('GATEWAY_RESPONSE_CLOSED')]) {
    const { circuit: c, transitions } = circuit()
    for (let i = 0; i < 4; i++) c.record(c.tryCall(), failure)
    await sleep(60)
    c.record(c.tryCall(), outcome)
    t.equal(c.state, 'open', outcome.message)
    t.same(transitions, ['open', 'half-open', 'open'])
  }
})

t.test('refused and not-counted calls do not dilute the failure rate', async (t) => {
  const { circuit: c } = circuit()
  for (let i = 0; i < 20; i++) c.record(c.tryCall(), new NotCountedError('GATEWAY_ERR_BODY_TOO_LARGE'))
  for (let i = 0; i < 4; i++) c.record(c.tryCall(), failure)
  t.equal(c.state, 'open', '4 of 4 counted calls failed; the 20 not counted are not in the window')
  for (let i = 0; i < 10; i++) c.record(c.tryCall(), undefined) // refused while open: REFUSED tickets
  await sleep(60)
  t.equal(c.state, 'half-open', 'the refused calls did not count as successes')
})

t.test('the window forgets failures older than rollingWindow', async (t) => {
  const transitions: CircuitState[] = []
  const c = new Circuit({ ...policy, rollingWindowMs: 100 }, (state) => { transitions.push(state) })
  t.teardown(() => { c.shutdown() })
  for (let i = 0; i < 3; i++) c.record(c.tryCall(), failure)
  await sleep(130)
  c.record(c.tryCall(), failure)
  t.equal(c.state, 'closed', 'one failure in the current window: below volumeThreshold')
  t.same(transitions, [])
})
