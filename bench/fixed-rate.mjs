// An open-loop load at a fixed rate, for the added-latency target: requests are sent on a schedule
// (one every 1/rate s) whatever the answers do, and each latency is measured from the moment its
// request was due, in microseconds — so a stall is counted in full (no coordinated omission), and
// sub-millisecond differences are visible (autocannon reports whole milliseconds).
import { Pool } from 'undici'

/**
 * @param {string} url
 * @param {{ rate: number, seconds: number, headers?: Record<string, string>, connections?: number }} options
 * @returns {Promise<{ requests: number, p50: number, p99: number, non2xx: number, errors: number }>} latencies in ms
 */
export async function loadAtFixedRate (url, { rate, seconds, headers = {}, connections = 20 }) {
  const { origin, pathname } = new URL(url)
  // Keep-alive connections, as wrk's; every request waits at most 5 s.
  const pool = new Pool(origin, { connections, pipelining: 1, headersTimeout: 5_000, bodyTimeout: 5_000 })
  const total = Math.round(rate * seconds)
  const latencies = new Float64Array(total)
  let non2xx = 0
  let errors = 0
  const started = process.hrtime.bigint()
  const dueAt = (i) => started + BigInt(Math.round((i * 1e9) / rate))
  const inFlight = []
  for (let i = 0; i < total; i++) {
    const due = dueAt(i)
    const wait = Number(due - process.hrtime.bigint()) / 1e6
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait - 0.5))
    // Spin the last half millisecond: setTimeout's granularity is a millisecond.
    while (process.hrtime.bigint() < due) await new Promise(setImmediate)
    inFlight.push(pool.request({ path: pathname, method: 'GET', headers }).then(async (response) => {
      await response.body.dump()
      if (response.statusCode < 200 || response.statusCode >= 300) non2xx++
      latencies[i] = Number(process.hrtime.bigint() - due) / 1e6
    }, () => {
      errors++
      latencies[i] = Number.POSITIVE_INFINITY
    }))
  }
  await Promise.all(inFlight)
  await pool.close()
  const sorted = [...latencies].sort((a, b) => a - b)
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
  return { requests: total, p50: at(0.5), p99: at(0.99), non2xx, errors }
}
