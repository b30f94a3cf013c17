/**
 * What the gateway learned about one request while deciding it — why auth refused it, which limit
 * refused it, how the upstream answered — written by the policy plugins and read once in
 * `onResponse` by the metrics and access-log plugins. Kept out of the request object (STYLE: no
 * public underscore properties), in a WeakMap that forgets a request with the request.
 */

/** Bounded reasons for a refused credential (the `reason` label of `gateway_auth_failures_total`). */
export type AuthFailureReason = 'missing' | 'invalid_token' | 'expired' | 'invalid_key' | 'insufficient_scope' | 'unavailable'

/**
 * Bounded kinds of upstream failure (the `kind` label of `gateway_upstream_errors_total`): the call
 * timed out, could not connect, broke (reset or malformed answer), or was never made because the
 * breaker was open or the service's bulkhead was full.
 */
export type UpstreamFailureKind = 'timeout' | 'connect' | 'broken' | 'circuit_open' | 'busy'

export interface RequestFacts {
  authFailure?: AuthFailureReason
  /** Name of the limit that refused the request (the consumer's, a service's, `route`). */
  rateLimited?: string
  /** The rate-limit store failed for this request (the failure policy applied). */
  storeError?: true
  /** `process.hrtime.bigint()` when the upstream call started. */
  upstreamStart?: bigint
  /** Milliseconds from the upstream call to its response headers, or to its failure. */
  upstreamMs?: number
  upstreamStatus?: number
  upstreamFailure?: UpstreamFailureKind
}

const facts = new WeakMap<object, RequestFacts>()

/** The facts of `request`, created on first use. */
export function factsOf (request: object): RequestFacts {
  let found = facts.get(request)
  if (found === undefined) {
    found = {}
    facts.set(request, found)
  }
  return found
}

/** The facts of `request`, or undefined when no plugin recorded any. */
export function recordedFacts (request: object): RequestFacts | undefined {
  return facts.get(request)
}

/** Records the upstream call's start; {@link endUpstreamCall} records its end. */
export function startUpstreamCall (request: object): void {
  factsOf(request).upstreamStart = process.hrtime.bigint()
}

export function endUpstreamCall (request: object, outcome: { status: number } | { failure: UpstreamFailureKind }): void {
  const found = factsOf(request)
  // A call the breaker or the bulkhead refused never reached the upstream: it has no duration.
  const called = !('failure' in outcome) || (outcome.failure !== 'circuit_open' && outcome.failure !== 'busy')
  if (called && found.upstreamStart !== undefined && found.upstreamMs === undefined) {
    found.upstreamMs = Number(process.hrtime.bigint() - found.upstreamStart) / 1e6
  }
  if ('status' in outcome) found.upstreamStatus = outcome.status
  else found.upstreamFailure = outcome.failure
}
