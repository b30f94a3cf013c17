/**
 * "Not hit", proved with a canary rather than a sleep (SECURITY.md): after a case, a canary request
 * is sent, and since `since` — the upstream's request count taken before the case — the only request
 * the upstream received whole is the canary. `streamed`: the case's head was valid and its body broke
 * later; the proxy streams large and chunked bodies, so the upstream may have seen the start, but
 * only as aborted (a small body is read whole first: the upstream sees nothing).
 */
import type { Test } from 'tap'
import type { RecordedRequest, TestUpstream } from '../../lib/testing/index.js'
import { rawGet, rawRequest } from './raw-http.js'

export interface CanaryCheck {
  port: number
  label: string
  since: number
  streamed?: boolean
}

/** Canaries go to `prefix`/canary-N (a proxied, non-refused path) with `headers` (e.g. a credential). */
export function createCanary (upstream: TestUpstream, prefix: string, headers: string[] = []): (t: Test, check: CanaryCheck) => Promise<RecordedRequest[]> {
  let sent = 0
  return async function assertOnlyCanary (t, { port, label, since, streamed = false }) {
    sent++
    const path = `${prefix}/canary-${sent}`
    const canary = await rawRequest(port, rawGet(path, headers))
    t.equal(canary.status, 200, `${label}: the gateway still answers`)
    await upstream.waitForRequests(since + 1)
    const arrived = upstream.requests.slice(since)
    t.same(arrived.filter((request) => !request.aborted).map((request) => request.url), [path], `${label}: the only request the upstream received whole is the canary`)
    if (!streamed) t.equal(arrived.length, 1, `${label}: nothing else arrived, not even aborted`)
    return arrived
  }
}
