// npm run bench: every candidate in its own process on 127.0.0.1, pinned to a core of its own, and
// measured one at a time in alternating rounds (A B C, C B A, …); load from wrk when installed (else
// autocannon). On a shared 2-core machine absolute req/s swing run to run: read the ratios measured
// side by side, and CPU µs per request (user + sys of the candidate process from /proc, divided by
// requests). Then the added latency at a fixed rate (bench/fixed-rate.mjs), gateway-full and bare
// reply-from vs direct.
//   ROUNDS (16), DURATION seconds (1), WARMUP seconds (5), CONNECTIONS (50), ONLY=cand1,cand2, SCENARIOS=get-small,…, TOKEN=rs256|hs256
//   PROFILE=gateway-full: that candidate runs under --cpu-prof (profiles in bench/profiles/), and its
//   most expensive frames are printed (bench/profile.mjs); CPU figures of a profiled run are inflated.
//   NODE_FLAGS="--max-semi-space-size=8": extra Node flags for every candidate (e.g. for the RSS study).
//   PIN=0: no CPU pinning. LATENCY_RATE (1000), LATENCY_ROUNDS (7), LATENCY_SECONDS (5), SKIP_LATENCY=1.
import { spawn, execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem, release } from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import { loadAtFixedRate } from './fixed-rate.mjs'
import { createIdentityProvider, startTestRedis } from '../dist/esm/testing/index.js'
import { createSigner } from 'fast-jwt'

// Many short rounds rather than a few long ones: this machine's speed moves within seconds, so the
// two measurements of a pair are closer in time, and the median is taken over more pairs.
const ROUNDS = Number(process.env.ROUNDS ?? 16)
const DURATION = Number(process.env.DURATION ?? 1)
// Five seconds: after three, a candidate's CPU per request still fell for three more rounds (V8's
// optimising compiler at work).
const WARMUP = Number(process.env.WARMUP ?? 5)
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 50)
const LATENCY_RATE = Number(process.env.LATENCY_RATE ?? 1000)
const LATENCY_SECONDS = Number(process.env.LATENCY_SECONDS ?? 5)
// Seven rounds: one 5 s round's p99 can be taken by a single stall of the machine (direct's p99
// read 0.37 ms and 41.6 ms in two rounds of one run; an idle process spinning alone on a core of
// this machine sees pauses of up to 13 ms).
const LATENCY_ROUNDS = Number(process.env.LATENCY_ROUNDS ?? 7)
const HMAC_SECRET = 'bench-secret-bench-secret-bench-secret-42'
const CLK_TCK = 100 // Linux USER_HZ

// reply-from-2 is the A/A control: a second bare reply-from process, whose CPU ratio to the first
// shows how far this run's ratios are off for code that is the same.
const ALL_CANDIDATES = ['direct', 'reply-from', 'reply-from-2', 'http-proxy', 'gateway-proxy', 'gateway-auth', 'gateway-full', 'gateway-full-redis', 'gateway-full-capped']
// gateway-full-capped: gateway-full with the heap flags docs/deployment.md recommends (V8 otherwise
// sizes its heap from the machine's memory, 24 GiB here).
// CAPPED_FLAGS="--max-semi-space-size=8" replaces them (to try other settings).
// --heap-growing-percent=100: under a cap this small V8 would let the old generation grow by only
// ~1.3× its live size between full collections, and collect it several times a second.
const CAPPED_HEAP_FLAGS = process.env.CAPPED_FLAGS ? process.env.CAPPED_FLAGS.split(' ').filter(Boolean) : ['--max-semi-space-size=4', '--max-old-space-size=96', '--heap-growing-percent=100']
const ALL_SCENARIOS = {
  'get-small': { method: 'GET', path: '/api/small' },
  'get-64k': { method: 'GET', path: '/api/large' },
  'post-1k': { method: 'POST', path: '/api/echo', body: JSON.stringify({ data: 'x'.repeat(1000) }).slice(0, 1024) }
}
// SCENARIOS=none: only the latency part.
const scenarios = process.env.SCENARIOS ? process.env.SCENARIOS.split(',').filter((name) => name !== 'none') : Object.keys(ALL_SCENARIOS)
const has = (command, args) => { try { execFileSync(command, args, { stdio: 'ignore' }); return true } catch (error) { return error.status === 1 } }
// A fresh machine: as root on Debian, install what the benchmark needs (bounded in time); otherwise
// do without (autocannon instead of wrk; no Redis candidate without redis-server).
function ensureDebianPackage (command, args, pkg) {
  if (has(command, args)) return true
  if (process.getuid?.() !== 0 || !has('apt-get', ['--version'])) return false
  console.log(`installing ${pkg} from Debian`)
  try {
    execFileSync('sh', ['-c', `apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkg} >/dev/null`], { stdio: 'inherit', timeout: 180_000 })
  } catch {}
  return has(command, args)
}
const hasWrk = ensureDebianPackage('wrk', ['-v'], 'wrk')
const hasRedis = ensureDebianPackage('redis-server', ['--version'], 'redis-server')
const candidates = (process.env.ONLY ? process.env.ONLY.split(',') : ALL_CANDIDATES)
  .filter((name) => name !== 'gateway-full-redis' || hasRedis || console.log('redis-server not available: gateway-full-redis skipped'))

// Pinning (PIN=0 turns it off): the candidate gets the last core to itself; wrk, the upstream,
// Redis and this runner share the others. Unpinned, the candidate's CPU per request swung by ±25 %
// between rounds, as the number of requests it handles per event-loop turn varied with whatever
// else ran on its core.
const CPU_COUNT = cpus().length
const PIN = process.env.PIN !== '0' && CPU_COUNT >= 2 && has('taskset', ['-V'])
const CANDIDATE_CPUS = `${CPU_COUNT - 1}`
const OTHER_CPUS = `0-${CPU_COUNT - 2}`
const pinned = (cpuList, command, args) => PIN ? ['taskset', ['-c', cpuList, command, ...args]] : [command, args]

function start (args, env = {}, cpuList = CANDIDATE_CPUS) {
  // taskset execs the command: the child's pid is the candidate's.
  const child = spawn(...pinned(cpuList, process.execPath, args), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not start within 20 s`)), 20_000)
    child.stdout.on('data', (data) => {
      const match = /ready (\d+)/.exec(data.toString())
      if (match) { clearTimeout(timer); resolve({ child, port: Number(match[1]) }) }
    })
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)))
  })
}
async function stop (child) {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await Promise.race([exited, sleep(3_000).then(() => child.kill('SIGKILL'))])
}
/** User and system CPU time of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). */
function cpuTicks (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return { user: Number(fields[11]), sys: Number(fields[12]) }
}
function peakRssMiB (pid) {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match ? Number(match[1]) / 1024 : NaN
}

async function loadWithWrk (url, scenario, headers, seconds) {
  const args = [`-t${PIN ? Math.max(1, CPU_COUNT - 1) : 2}`, `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '--timeout', '5s']
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`)
  if (scenario.method === 'POST') {
    const script = '/tmp/fastify-gateway-bench-post.lua'
    writeFileSync(script, `wrk.method = "POST"\nwrk.body = ${JSON.stringify(scenario.body)}\nwrk.headers["content-type"] = "application/json"\n`)
    args.push('-s', script)
  }
  // Asynchronous: this process also serves the identity provider's JWKS to the candidates.
  const { stdout: out } = await promisify(execFile)(...pinned(OTHER_CPUS, 'wrk', [...args, url]), { encoding: 'utf8', timeout: (seconds + 30) * 1000 })
  const ms = (text) => {
    const match = /([\d.]+)(us|ms|s|m)\b/.exec(text ?? '')
    if (match === null) return NaN
    return Number(match[1]) * ({ us: 0.001, ms: 1, s: 1000, m: 60_000 })[match[2]]
  }
  const requests = Number(/(\d+) requests in/.exec(out)[1])
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
  return {
    requests,
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)[1]),
    // Anchored: "90.50%" on the Thread Stats line also contains "50%".
    p50: ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1]),
    p99: ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1]),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    errors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0
  }
}
async function loadWithAutocannon (url, scenario, headers, seconds) {
  const result = await autocannon({
    url,
    connections: CONNECTIONS,
    duration: seconds,
    method: scenario.method,
    headers: { ...headers, ...(scenario.body ? { 'content-type': 'application/json' } : {}) },
    body: scenario.body
  })
  return { requests: result.requests.total, rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx, errors: result.errors + result.timeouts }
}
const load = (...args) => hasWrk ? loadWithWrk(...args) : loadWithAutocannon(...args)

const PROFILE_DIR = 'bench/profiles'
function nodeFlags (candidate) {
  const flags = process.env.NODE_FLAGS ? process.env.NODE_FLAGS.split(' ').filter(Boolean) : []
  if (candidate === 'gateway-full-capped') flags.push(...CAPPED_HEAP_FLAGS)
  if (process.env.PROFILE === candidate) flags.push('--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`)
  return flags
}

const urlOf = (candidate, proc, scenario) => `http://127.0.0.1:${proc.port}${candidate === 'direct' ? scenario.path.replace('/api', '') : scenario.path}`
const median = (values) => { const sorted = [...values].sort((a, b) => a - b); return sorted[Math.floor(sorted.length / 2)] }

async function main () {
  const started = Date.now()
  if (PIN) execFileSync('taskset', ['-p', '-c', OTHER_CPUS, String(process.pid)], { stdio: 'ignore' })
  const upstream = await start(['bench/upstream.mjs'], {}, OTHER_CPUS)
  const redis = hasRedis ? await startTestRedis() : undefined
  const idp = await createIdentityProvider({ audience: 'bench' })
  const rs256 = idp.sign({ sub: 'bench-user', aud: 'bench', exp: Math.floor(Date.now() / 1000) + 3600 })
  const hs256 = createSigner({ key: HMAC_SECRET, algorithm: 'HS256' })({ sub: 'bench-user', aud: 'bench', exp: Math.floor(Date.now() / 1000) + 3600 })
  const env = { UPSTREAM: `http://127.0.0.1:${upstream.port}`, REDIS_URL: redis?.url ?? '', JWKS_ISSUER: idp.issuer, JWKS_URI: idp.jwksUri, HMAC_SECRET }
  // TOKEN=hs256 measures the HMAC path instead of RS256 through the local JWKS.
  const token = process.env.TOKEN === 'hs256' ? hs256 : rs256
  // Every candidate gets the same requests, token included: what is compared is the work each does
  // with them, not the bytes of a bigger request (an RS256 token is ~700 bytes to receive and parse).
  // The gateway checks and strips it; the bare proxies forward it.
  const headersFor = () => ({ authorization: `Bearer ${token}` })
  const results = {}
  console.log(`load: ${hasWrk ? 'wrk' : 'autocannon'}, ${CONNECTIONS} connections, ${ROUNDS} rounds × ${DURATION} s (+${WARMUP} s warm-up)`)
  try {
    for (const name of scenarios) {
      const scenario = ALL_SCENARIOS[name]
      // Every candidate of a scenario is started and warmed up once, then measured in turn, round
      // after round, in alternating order (A B C, C B A, …): the machine's drift over a minute then
      // falls on all candidates alike instead of on whichever ran last.
      const procs = {}
      try {
        for (const candidate of candidates) {
          procs[candidate] = candidate === 'direct' ? { child: undefined, port: upstream.port } : await start([...nodeFlags(candidate), 'bench/candidate.mjs', candidate.replace(/-capped$/, '')], env)
          await load(urlOf(candidate, procs[candidate], scenario), scenario, headersFor(candidate), WARMUP)
        }
        for (let round = 1; round <= ROUNDS; round++) {
          const order = round % 2 === 1 ? candidates : [...candidates].reverse()
          for (const candidate of order) {
            const proc = procs[candidate]
            const pid = (proc.child ?? upstream.child).pid
            const before = cpuTicks(pid)
            const upstreamBefore = cpuTicks(upstream.child.pid)
            const startedAt = Date.now()
            const measured = await load(urlOf(candidate, proc, scenario), scenario, headersFor(candidate), DURATION)
            const after = cpuTicks(pid)
            const upstreamAfter = cpuTicks(upstream.child.pid)
            const ticks = after.user + after.sys - before.user - before.sys
            const cpuUsPerRequest = ticks * (1e6 / CLK_TCK) / measured.requests
            // The kernel's share of the candidate's CPU time (socket work: about the same per request
            // for every proxy), and how busy its core was (≈ 100 %: the candidate is the bottleneck).
            const sysShare = (after.sys - before.sys) / ticks
            const busy = ticks * (1000 / CLK_TCK) / (Date.now() - startedAt)
            const upstreamUs = (upstreamAfter.user + upstreamAfter.sys - upstreamBefore.user - upstreamBefore.sys) * (1e6 / CLK_TCK) / measured.requests
            const key = `${name} ${candidate}`
            ;(results[key] ??= [])[round - 1] = { ...measured, cpuUsPerRequest, sysShare, rss: peakRssMiB(pid) }
            console.log(`round ${round} ${key}: ${measured.rps.toFixed(0)} req/s, p50 ${measured.p50.toFixed(2)} ms, p99 ${measured.p99.toFixed(2)} ms, ${cpuUsPerRequest.toFixed(1)} µs CPU/req (sys ${(sysShare * 100).toFixed(0)} %, busy ${(busy * 100).toFixed(0)} %; upstream ${upstreamUs.toFixed(1)} µs/req), non-2xx ${measured.non2xx}, errors ${measured.errors}`)
          }
        }
      } finally {
        for (const proc of Object.values(procs)) if (proc.child) await stop(proc.child)
      }
    }
    // Added latency at a fixed, moderate rate: an open-loop load (bench/fixed-rate.mjs, µs
    // resolution, no coordinated omission), direct, bare reply-from and gateway-full in alternating
    // rounds, from a process of its own on the other core — a core it has to itself: to send on
    // time it spins (setImmediate), and an upstream on its core waited for the scheduler to preempt
    // it (bare reply-from's p99 2.2–3.0 ms with the upstream there, 0.6–0.85 ms with the upstream
    // on the candidates' core). So the latency part has an upstream of its own, next to the
    // candidates, which take turns and never load that core at the same time.
    let latency = {}
    if (!process.env.SKIP_LATENCY) {
      const procs = {}
      const latencyUpstream = await start(['bench/upstream.mjs'], {}, CANDIDATE_CPUS)
      try {
        // Bare reply-from is the control: what any Node proxy hop adds to the tail on this machine.
        for (const candidate of ['reply-from', 'gateway-full']) procs[candidate] = await start(['bench/candidate.mjs', candidate], { ...env, UPSTREAM: `http://127.0.0.1:${latencyUpstream.port}` })
        const targets = {
          direct: { url: `http://127.0.0.1:${latencyUpstream.port}/small`, headers: headersFor('direct') },
          ...Object.fromEntries(Object.entries(procs).map(([candidate, proc]) => [candidate, { url: `http://127.0.0.1:${proc.port}/api/small`, headers: headersFor(candidate) }]))
        }
        // Warmed up at full speed first, as the throughput candidates are: these processes are new,
        // and after the fixed-rate warm-up alone (5,000 requests) a candidate's p99 read 22–84 ms
        // in its second round while V8 was still optimising it.
        for (const { url, headers } of Object.values(targets)) await load(url, ALL_SCENARIOS['get-small'], headers, WARMUP)
        latency = await loadAtFixedRate({
          targets,
          rate: LATENCY_RATE,
          seconds: LATENCY_SECONDS,
          warmup: WARMUP,
          rounds: LATENCY_ROUNDS
        }, (command, args) => pinned(OTHER_CPUS, command, args))
      } finally {
        for (const proc of Object.values(procs)) await stop(proc.child)
        await stop(latencyUpstream.child)
      }
    }
    report(results, latency, Date.now() - started)
    if (process.env.PROFILE) {
      const { printProfile } = await import('./profile.mjs')
      printProfile(PROFILE_DIR)
    }
  } finally {
    await stop(upstream.child)
    await redis?.stop()
    await idp.close()
  }
}

function report (results, latency, elapsedMs) {
  // Ratios are the median of the ratios measured in the same round: the machine drifts by ±25 %
  // between rounds, far less between two candidates of one round.
  // The baseline, bare reply-from, is measured by two processes of the same code (the A/A pair),
  // and ratios "÷ reply-from" are taken against their mean in each round: on this machine one of
  // two identical processes sat 10–20 % off the other for a whole run (the A/A row), and every
  // ratio against that one process carried it.
  const baselineRuns = (name) => {
    const one = results[`${name} reply-from`]
    const two = results[`${name} reply-from-2`]
    if (one === undefined || two === undefined) return one
    return one.map((run, i) => ({ cpuUsPerRequest: (run.cpuUsPerRequest + two[i].cpuUsPerRequest) / 2, rps: (run.rps + two[i].rps) / 2 }))
  }
  const roundRatio = (name, a, b, field) => {
    const x = results[`${name} ${a}`]
    const y = b === 'reply-from' && a !== 'reply-from-2' ? baselineRuns(name) : results[`${name} ${b}`]
    if (x === undefined || y === undefined) return undefined
    return median(x.map((run, i) => run[field] / y[i][field]))
  }
  const summary = {}
  for (const [key, runs] of Object.entries(results)) {
    summary[key] = {
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpu: median(runs.map((r) => r.cpuUsPerRequest)),
      sys: median(runs.map((r) => r.sysShare)),
      rss: Math.max(...runs.map((r) => r.rss)),
      non2xx: runs.reduce((sum, r) => sum + r.non2xx, 0),
      errors: runs.reduce((sum, r) => sum + r.errors, 0)
    }
  }
  const rows = []
  for (const name of scenarios) {
    const base = summary[`${name} reply-from`]
    const direct = summary[`${name} direct`]
    for (const candidate of candidates) {
      const s = summary[`${name} ${candidate}`]
      if (!s) continue
      const cpu = candidate === 'direct' ? '—' : s.cpu.toFixed(1)
      const sys = candidate === 'direct' ? '—' : (s.sys * 100).toFixed(0)
      rows.push(`| ${name} | ${candidate} | ${s.rps.toFixed(0)} | ${direct ? (s.rps / direct.rps).toFixed(2) : '—'} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${cpu} | ${sys} | ${base && candidate !== 'direct' ? roundRatio(name, candidate, 'reply-from', 'cpuUsPerRequest').toFixed(2) : '—'} | ${candidate === 'direct' ? '—' : s.rss.toFixed(0)} | ${s.non2xx} | ${s.errors} |`)
    }
  }
  const ratio = (a, b, field) => { const value = roundRatio('get-small', a, b, field); return value === undefined ? 'n/a' : value.toFixed(2) }
  const targets = [
    ['Proxy only: CPU/req ≤ 1.05 × bare reply-from', ratio('gateway-proxy', 'reply-from', 'cpuUsPerRequest'), 1.05, '≤'],
    ['Full policy, memory store: CPU/req ≤ 1.25 × bare reply-from', ratio('gateway-full', 'reply-from', 'cpuUsPerRequest'), 1.25, '≤'],
    ['Full policy, memory store: req/s ≥ 0.85 × bare http-proxy', ratio('gateway-full', 'http-proxy', 'rps'), 0.85, '≥'],
    ['Full policy, Redis store: CPU/req ≤ 1.4 × bare reply-from', ratio('gateway-full-redis', 'reply-from', 'cpuUsPerRequest'), 1.4, '≤'],
    ['Memory store cost: CPU/req gateway-full ÷ gateway-auth (same gateway, no limits)', ratio('gateway-full', 'gateway-auth', 'cpuUsPerRequest'), undefined],
    ['Redis store cost: CPU/req gateway-full-redis ÷ gateway-auth', ratio('gateway-full-redis', 'gateway-auth', 'cpuUsPerRequest'), undefined],
    ['A/A control: CPU/req of a second bare reply-from process ÷ the first (1.00 on a quiet machine)', ratio('reply-from-2', 'reply-from', 'cpuUsPerRequest'), undefined]
  ]
  // Added latency: the median over rounds of (a − b), each pair measured in the same round.
  const added = (field, a = 'gateway-full', b = 'direct') => latency[a] && latency[b] ? median(latency[a].map((run, i) => run[field] - latency[b][i][field])) : NaN
  const addedP50 = added('p50')
  const addedP99 = added('p99')
  const latencyRow = (a, b) => `p50 ${added('p50', a, b).toFixed(2)} ms, p99 ${added('p99', a, b).toFixed(2)} ms`
  const latencyOf = (candidate, field) => latency[candidate] ? median(latency[candidate].map((run) => run[field])).toFixed(2) : 'n/a'
  const peakRssOf = (keep) => Math.max(...Object.entries(summary).filter(([key]) => key.includes(' gateway-') && keep(key)).map(([, s]) => s.rss))
  const peakRss = peakRssOf((key) => !key.endsWith('-capped'))
  const cappedRss = peakRssOf((key) => key.endsWith('-capped'))
  const failures = Object.values(summary).reduce((sum, s) => sum + s.non2xx + s.errors, 0)
  const verdict = (value, limit, op) => limit === undefined || value === 'n/a' ? '' : ((op === '≤' ? Number(value) <= limit : Number(value) >= limit) ? 'met' : '**not met**')
  const versions = ['fastify', '@fastify/reply-from', '@fastify/http-proxy', 'fast-jwt', 'ioredis', 'undici'].map((name) => `${name} ${JSON.parse(readFileSync(`node_modules/${name}/package.json`, 'utf8')).version}`).join(', ')
  const text = `# Benchmarks

Generated by \`npm run bench\` (bench/run.mjs) on ${new Date().toISOString().slice(0, 10)} in ${(elapsedMs / 60000).toFixed(1)} min.
Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, Node ${process.version}.
Versions: ${versions}.
Load: ${hasWrk ? 'wrk' : 'autocannon'}, ${CONNECTIONS} connections, ${ROUNDS} interleaved rounds × ${DURATION} s after a ${WARMUP} s warm-up; medians shown, and ratios are the median of the ratios within each round.

${PIN ? 'The candidate runs pinned to a core of its own; wrk, the upstream, Redis and the runner share the other.' : 'Load generator, candidate and upstream share the cores (PIN=0).'}
Absolute req/s swing run to run: compare the ratios, and CPU µs per request of the candidate
process (user + sys from /proc ÷ requests). "÷ reply-from" is against the mean of the two bare
reply-from processes in the same round; the A/A control row (one of them ÷ the other) shows how
far a ratio of this run is off for identical code. Instructions per request, which do not move with the machine:
\`npm run bench:instructions\` (notes below).

Candidates: \`direct\` (no proxy), bare \`reply-from\` (and \`reply-from-2\`, a second process of it: the A/A control), bare \`http-proxy\`, \`gateway-proxy\` (correlation id, request
guard, proxy; no auth, no limits), \`gateway-auth\` (+ JWT RS256 via a local JWKS, API keys; no limits), \`gateway-full\`
(+ per-consumer and per-service limits in memory, metrics on a separate listener, access log without a logger),
\`gateway-full-redis\` (the same with the Redis store), \`gateway-full-capped\` (gateway-full with \`${CAPPED_HEAP_FLAGS.join(' ')}\`). Every gateway candidate runs the per-service circuit
breaker (on by default). Flags: ${process.env.NODE_FLAGS || 'none'}; token: ${process.env.TOKEN === 'hs256' ? 'HS256' : 'RS256 via the local JWKS'}.

## Targets

| target | measured | |
|---|---|---|
${targets.map(([label, value, limit, op]) => `| ${label} | ${value} | ${verdict(value, limit, op)} |`).join('\n')}
| Added latency at ${LATENCY_RATE.toLocaleString('en')} req/s (gateway-full − direct): p50 ≤ 1 ms, p99 ≤ 3 ms | p50 ${addedP50.toFixed(2)} ms, p99 ${addedP99.toFixed(2)} ms (direct ${latencyOf('direct', 'p50')} / ${latencyOf('direct', 'p99')} ms, gateway-full ${latencyOf('gateway-full', 'p50')} / ${latencyOf('gateway-full', 'p99')} ms) | ${Number.isNaN(addedP50) ? '' : (addedP50 <= 1 && addedP99 <= 3 ? 'met' : '**not met**')} |
| Latency control: what a bare reply-from hop adds (reply-from − direct), same rounds | ${latencyRow('reply-from', 'direct')} (reply-from ${latencyOf('reply-from', 'p50')} / ${latencyOf('reply-from', 'p99')} ms) |  |
| Latency the gateway's policy adds over that hop (gateway-full − reply-from), same rounds | ${latencyRow('gateway-full', 'reply-from')} |  |
| Gateway peak RSS under load ≤ 150 MiB, Node's default heap sizing | ${Number.isFinite(peakRss) ? `${peakRss.toFixed(0)} MiB` : 'n/a'} | ${Number.isFinite(peakRss) ? (peakRss <= 150 ? 'met' : '**not met**') : ''} |
| Gateway peak RSS under load ≤ 150 MiB, heap flags of deployment.md (\`${CAPPED_HEAP_FLAGS.join(' ')}\`, gateway-full-capped) | ${Number.isFinite(cappedRss) ? `${cappedRss.toFixed(0)} MiB; CPU/req ÷ reply-from ${ratio('gateway-full-capped', 'reply-from', 'cpuUsPerRequest')}` : 'n/a'} | ${Number.isFinite(cappedRss) ? (cappedRss <= 150 ? 'met' : '**not met**') : ''} |
| Zero non-2xx and zero socket errors | ${failures} | ${failures === 0 ? 'met' : '**not met**'} |

## Results

| scenario | candidate | req/s | ÷ direct | p50 ms | p99 ms | CPU µs/req | of it kernel % | CPU ÷ reply-from | peak RSS MiB | non-2xx | socket errors |
|---|---|---|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

## Rerun

\`npm run bench\` (builds first; as root on Debian it installs wrk and redis-server when missing, else it uses autocannon and skips the Redis candidate).
Environment: \`ROUNDS\`, \`DURATION\`, \`WARMUP\`, \`CONNECTIONS\`, \`ONLY=gateway-proxy,reply-from\`, \`SCENARIOS=get-small\`, \`LATENCY_RATE\`, \`LATENCY_ROUNDS\`, \`LATENCY_SECONDS\`, \`NODE_FLAGS\`, \`PIN=0\` (no CPU pinning), \`PROFILE=<candidate>\`, \`TOKEN=hs256\`. Instructions per request: \`npm run bench:instructions\` (valgrind).
`
  const file = process.env.BENCH_OUTPUT ?? 'docs/benchmarks.md'
  const previous = (() => { try { return readFileSync(file, 'utf8') } catch { return '' } })()
  const notes = previous.includes('<!-- notes -->') ? previous.slice(previous.indexOf('<!-- notes -->')) : '<!-- notes -->\n'
  writeFileSync(file, `${text}\n${notes}`)
  console.log(`\nwrote ${file}\n`)
  console.log(text)
}

await main()
