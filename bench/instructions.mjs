// Instructions per request, counted by valgrind's callgrind: unlike CPU time, the count does not
// move with whatever else the machine is doing, so small differences between candidates show.
// User-space instructions only (the kernel's socket work, about the same for every proxy, is not
// in it), and under valgrind everything runs ~50× slower, so a few thousand requests per candidate.
//   npm run bench:instructions -- [candidate …]   (default: reply-from http-proxy gateway-proxy gateway-full gateway-full-redis)
// The warm-up is long on purpose: after 3,000 requests V8's optimising compiler still ran, and its
// work was a quarter of the count (95 k of 369 k instructions per request for bare reply-from) and
// more for candidates with more code. The "compiler" column shows what is left of it (steady state:
// a few %), and "÷ reply-from" compares the counts without it. Repeated runs agree within ~3 %.
// A single run can still catch a late deoptimisation or a full GC in its window (one gateway-proxy
// run read 336 k where others read 250–277 k): ROUNDS=2 measures every candidate twice, in
// alternating order, shows both counts and compares the lower one (what disturbs a run only adds).
// The GC's share is shown as well.
//   REQUESTS (3000), WARMUP_REQUESTS (20000), CONNECTIONS (50, as the wrk load), ROUNDS (1)
// Needs valgrind (Debian: valgrind) and a build (npm run build); ~2 min per candidate. Prints a Markdown table.
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import { createSigner } from 'fast-jwt'
import { startTestRedis } from '../dist/esm/testing/index.js'

const REQUESTS = Number(process.env.REQUESTS ?? 3000)
const WARMUP_REQUESTS = Number(process.env.WARMUP_REQUESTS ?? 20000)
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 50)
const ROUNDS = Number(process.env.ROUNDS ?? 1)
const HMAC_SECRET = 'bench-secret-bench-secret-bench-secret-42'
const candidates = process.argv.length > 2 ? process.argv.slice(2) : ['reply-from', 'http-proxy', 'gateway-proxy', 'gateway-full', 'gateway-full-redis']
const token = createSigner({ key: HMAC_SECRET, algorithm: 'HS256' })({ sub: 'bench-user', aud: 'bench', exp: Math.floor(Date.now() / 1000) + 3600 })
const headers = { authorization: `Bearer ${token}` }

function started (child, pattern, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready within ${ms} ms`)), ms)
    child.stdout.on('data', (data) => {
      const match = pattern.exec(data.toString())
      if (match) { clearTimeout(timer); resolve(Number(match[1])) }
    })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`exited with ${code}`)) })
  })
}
const control = (...args) => execFileSync('callgrind_control', args, { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] })
const load = (url, amount) => autocannon({ url, amount, connections: CONNECTIONS, headers, timeout: 30 })

const upstream = spawn(process.execPath, ['bench/upstream.mjs'], { stdio: ['ignore', 'pipe', 'inherit'] })
const upstreamPort = await started(upstream, /ready (\d+)/, 10_000)
const redis = candidates.includes('gateway-full-redis') ? await startTestRedis() : undefined
const env = { ...process.env, UPSTREAM: `http://127.0.0.1:${upstreamPort}`, REDIS_URL: redis?.url ?? '', HMAC_SECRET, JWKS_ISSUER: 'http://127.0.0.1:9/', JWKS_URI: 'http://127.0.0.1:9/jwks' }
const rows = []

// Functions of V8's compilers (TurboFan, Turboshaft, Maglev, Sparkplug, the parser and bytecode
// generator), by the names callgrind_annotate prints for the node binary.
const COMPILER = /compiler::|turboshaft|maglev|baseline::|interpreter::|Parser|Scanner|Bytecode|Compiler::/i
// V8's garbage collector (scavenges, marking, sweeping, compaction), on any thread.
const GC = /Scaveng|MarkCompact|Marking|Sweeper|Evacuat|heap::base::|cppgc::/
/** Instructions spent in V8's compilers and in its GC, from the dump's per-function totals. */
function shares (dump) {
  const listing = execFileSync('callgrind_annotate', ['--threshold=100', dump], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 120_000 })
  let compiler = 0
  let gc = 0
  for (const line of listing.split('\n')) {
    const match = /^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$/.exec(line)
    if (match === null || match[2].includes('PROGRAM TOTALS')) continue
    const count = Number(match[1].replaceAll(',', ''))
    if (COMPILER.test(match[2])) compiler += count
    else if (GC.test(match[2])) gc += count
  }
  return { compiler, gc }
}
try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const candidate of round % 2 === 1 ? candidates : [...candidates].reverse()) {
      const out = `/tmp/fastify-gateway-callgrind-${process.pid}-${candidate}.out`
      rmSync(out, { force: true })
      rmSync(`${out}.1`, { force: true })
      const child = spawn('valgrind', ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`, process.execPath, 'bench/candidate.mjs', candidate], { env, stdio: ['ignore', 'pipe', 'ignore'] })
      try {
        const port = await started(child, /ready (\d+)/, 120_000)
        const url = `http://127.0.0.1:${port}/api/small`
        await load(url, WARMUP_REQUESTS)
        control('--zero', String(child.pid))
        control('--instr=on', String(child.pid))
        const result = await load(url, REQUESTS)
        control('--instr=off', String(child.pid))
        control('--dump', String(child.pid))
        await sleep(500)
        // Each --dump writes <out>.<n>.
        const totals = readFileSync(`${out}.1`, 'utf8').split('\n').filter((line) => line.startsWith('totals:') || line.startsWith('summary:'))
        const instructions = Number(totals[totals.length - 1].split(/\s+/)[1])
        const { compiler, gc } = shares(`${out}.1`)
        const ok = result['2xx']
        rows.push({ candidate, perRequest: instructions / ok, compilerPerRequest: compiler / ok, gcPerRequest: gc / ok, ok, errors: result.errors + result.non2xx })
        console.error(`round ${round} ${candidate}: ${(instructions / ok / 1000).toFixed(1)} k instructions per request, ${(compiler / ok / 1000).toFixed(1)} k of them compiling, ${(gc / ok / 1000).toFixed(1)} k collecting garbage (${ok} × 2xx)`)
      } finally {
        child.kill('SIGKILL')
        await new Promise((resolve) => child.once('exit', resolve))
        rmSync(out, { force: true })
        rmSync(`${out}.1`, { force: true })
      }
    }
  }
} finally {
  upstream.kill()
  await redis?.stop()
}
const k = (value) => (value / 1000).toFixed(1)
const summary = candidates.map((candidate) => {
  const runs = rows.filter((row) => row.candidate === candidate)
  // The run with the lowest count: a disturbance in a run's window only ever adds instructions.
  const best = runs.reduce((low, row) => row.perRequest < low.perRequest ? row : low)
  return {
    candidate,
    runs,
    total: best.perRequest,
    compiler: best.compilerPerRequest,
    gc: best.gcPerRequest,
    steady: best.perRequest - best.compilerPerRequest,
    errors: runs.reduce((sum, row) => sum + row.errors, 0)
  }
})
const base = summary.find((row) => row.candidate === 'reply-from')
console.log(`${REQUESTS} small GETs after ${WARMUP_REQUESTS} warm-up ones, ${CONNECTIONS} connections, HS256 token for every candidate, ${ROUNDS} round(s); the lowest of each candidate's runs.\n`)
console.log('| candidate | k instructions / request | runs | of which compiling | of which GC | without compiling | ÷ reply-from (without compiling) | non-2xx + errors |')
console.log('|---|---|---|---|---|---|---|---|')
for (const row of summary) console.log(`| ${row.candidate} | ${k(row.total)} | ${row.runs.map((run) => k(run.perRequest)).join(' / ')} | ${k(row.compiler)} | ${k(row.gc)} | ${k(row.steady)} | ${base ? (row.steady / base.steady).toFixed(2) : '—'} | ${row.errors} |`)
