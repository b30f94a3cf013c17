// An open-loop load at a fixed rate, for the added-latency target: requests are sent on a schedule
// (one every 1/rate s) whatever the answers do, and each latency is measured from the moment its
// request was due, in microseconds — so a stall is counted in full (no coordinated omission), and
// sub-millisecond differences are visible (autocannon reports whole milliseconds).
//
// The load runs in a process of its own, which does nothing else: a pause of the load generator
// is counted as latency of whatever it measures. It used to run inside bench/run.mjs, which also
// serves the JWKS, and it kept every request's promise until the round ended; its own scavenges
// then took up to 17 ms and every request waiting on them was measured that late — direct
// included (p99 1.7–8.3 ms for direct between rounds). Now: no promise per request, nothing kept
// but a Float64Array of latencies, one process for all rounds (warmed up once).
//   node bench/fixed-rate.mjs '<json: { targets: { name: { url, headers } }, rate, seconds, warmup, rounds }>'
// prints one line per round on stderr, then the results as JSON on stdout.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'

/**
 * One fixed-rate load through a pool of open connections.
 * @param {Pool} pool
 * @param {string} path
 * @param {{ rate: number, seconds: number, headers?: Record<string, string> }} options
 * @returns {Promise<{ requests: number, p50: number, p99: number, non2xx: number, errors: number }>} latencies in ms
 */
function loadOnce (pool, path, { rate, seconds, headers = {} }) {
  const total = Math.round(rate * seconds)
  const interval = 1000 / rate
  const latencies = new Float64Array(total).fill(Number.POSITIVE_INFINITY)
  let sent = 0
  let settled = 0
  let non2xx = 0
  let errors = 0
  let finished
  const done = new Promise((resolve) => { finished = resolve })
  const started = performance.now()
  // One small object per request, no promise: undici's dispatch handler interface.
  class Measured {
    constructor (index) { this.index = index; this.status = 0 }
    onConnect () {}
    onHeaders (status) { this.status = status; return true }
    onData () { return true }
    onComplete () {
      latencies[this.index] = performance.now() - (started + this.index * interval)
      if (this.status < 200 || this.status >= 300) non2xx++
      if (++settled === total) finished()
    }

    onError () {
      errors++
      if (++settled === total) finished()
    }
  }
  const request = { path, method: 'GET', headers }
  // Send whatever is due, then come back on the next turn: setTimeout's granularity is a
  // millisecond, as long as the interval at 1,000 req/s.
  const tick = () => {
    const now = performance.now()
    while (sent < total && started + sent * interval <= now) pool.dispatch(request, new Measured(sent++))
    if (sent === total) return
    const wait = started + sent * interval - performance.now()
    if (wait > 2) setTimeout(tick, wait - 1.5)
    else setImmediate(tick)
  }
  tick()
  return done.then(() => {
    latencies.sort()
    // A request that failed counts as the longest wait there is (5 s); it is also counted in errors.
    const at = (q) => Math.min(5_000, latencies[Math.min(total - 1, Math.floor(q * total))])
    return { requests: total, p50: at(0.5), p99: at(0.99), non2xx, errors }
  })
}

/**
 * Warms up once per target, then measures rounds in alternating order (A B C, C B A, …). The
 * connections of a target stay open from its warm-up to the last round, as a client's keep-alive
 * connections do: opening 20 connections at the start of each round made its first requests wait
 * 5–10 ms, which alone were a fifth of the requests above p99.
 */
async function rounds ({ targets, rate, seconds, warmup, rounds: count }) {
  const names = Object.keys(targets)
  const pools = Object.fromEntries(names.map((name) => {
    const { origin, pathname } = new URL(targets[name].url)
    // Every request waits at most 5 s.
    return [name, { pool: new Pool(origin, { connections: 20, pipelining: 1, headersTimeout: 5_000, bodyTimeout: 5_000 }), path: pathname }]
  }))
  const measure = (name, duration) => loadOnce(pools[name].pool, pools[name].path, { rate, seconds: duration, headers: targets[name].headers })
  for (const name of names) await measure(name, warmup)
  const results = Object.fromEntries(names.map((name) => [name, []]))
  for (let round = 1; round <= count; round++) {
    for (const name of round % 2 === 1 ? names : [...names].reverse()) {
      const measured = await measure(name, seconds)
      results[name][round - 1] = measured
      console.error(`latency round ${round} ${name} at ${rate} req/s: p50 ${measured.p50.toFixed(3)} ms, p99 ${measured.p99.toFixed(3)} ms, non-2xx ${measured.non2xx}, errors ${measured.errors}`)
    }
  }
  await Promise.all(Object.values(pools).map(({ pool }) => pool.close()))
  return results
}

/**
 * Runs the rounds in a child process of their own and returns, per target, one result per round.
 * @param {{ targets: Record<string, { url: string, headers?: Record<string, string> }>, rate: number, seconds: number, warmup: number, rounds: number }} plan
 * @param {(command: string, args: string[]) => [string, string[]]} [wrap] e.g. CPU pinning with taskset
 */
export function loadAtFixedRate (plan, wrap = (command, args) => [command, args]) {
  const child = spawn(...wrap(process.execPath, [fileURLToPath(import.meta.url), JSON.stringify(plan)]), { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (chunk) => { out += chunk })
  const bound = (plan.warmup + plan.rounds * plan.seconds) * Object.keys(plan.targets).length * 1000 + 60_000
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('the fixed-rate load did not finish in time')) }, bound)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve(JSON.parse(out))
      else reject(new Error(`the fixed-rate load exited with ${code}`))
    })
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(JSON.stringify(await rounds(JSON.parse(process.argv[2]))))
}
