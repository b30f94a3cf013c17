/**
 * What the gateway learned about one request while deciding it — why auth refused it, which limit
 * refused it, how the upstream answered — written by the policy plugins and read once in
 * `onResponse` by the metrics and access-log plugins. Kept under a symbol of the request (STYLE: no
 * public underscore properties), declared as a request decoration so that every request has the
 * same shape; a WeakMap entry per request cost more (a hash, an ephemeron for the GC).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { GatewayRoutePolicy } from '../types.js'

/** Bounded reasons for a refused credential (the `reason` label of `gateway_auth_failures_total`). */
export type AuthFailureReason = 'missing' | 'invalid_token' | 'expired' | 'invalid_key' | 'insufficient_scope' | 'unavailable'

/**
 * Bounded kinds of upstream failure (the `kind` label of `gateway_upstream_errors_total`): the call
 * timed out, could not connect, broke (reset or malformed answer), or was never made because the
 * breaker was open or the service's bulkhead was full.
 */
export type UpstreamFailureKind = 'timeout' | 'connect' | 'broken' | 'circuit_open' | 'busy'

/** A route's `config` as Fastify keeps it: the route's own, plus its `url` and `method` (none on a 404). */
export type RouteConfig = Record<PropertyKey, unknown> & { url?: string, method?: string | string[], gateway?: GatewayRoutePolicy }

export interface RequestFacts {
  /** The route's config, read once (see {@link routeConfigOf}). */
  routeConfig?: RouteConfig
  authFailure?: AuthFailureReason
  /** Name of the limit that refused the request (the consumer's, a service's, `route`). */
  rateLimited?: string
  /** The rate-limit store failed for this request (the failure policy applied). */
  storeError?: true
  /** `performance.now()` when the upstream call started. */
  upstreamStart?: number
  /** Milliseconds from the upstream call to its response headers, or to its failure. */
  upstreamMs?: number
  upstreamStatus?: number
  upstreamFailure?: UpstreamFailureKind
}

const kFacts = Symbol('fastify-gateway.request-facts')
// Any request: the proxy's hooks are typed for every server kind (HTTP/2 included).
type AnyRequest = FastifyRequest<any, any, any, any, any, any, any, any>
type WithFacts = AnyRequest & { [kFacts]?: RequestFacts | null }

/** Declares the facts on the instance's requests (once per instance; plugins that write facts call it). */
export function declareRequestFacts (fastify: FastifyInstance): void {
  if (!fastify.hasRequestDecorator(kFacts)) fastify.decorateRequest(kFacts, null)
}

/** The facts of `request`, created on first use. */
export function factsOf (request: AnyRequest): RequestFacts {
  return ((request as WithFacts)[kFacts] ??= {})
}

/** The facts of `request`, or undefined when no plugin recorded any. */
export function recordedFacts (request: AnyRequest): RequestFacts | undefined {
  return (request as WithFacts)[kFacts] ?? undefined
}

/**
 * The config of the request's route. Read through `request.routeOptions` once per request: that
 * getter builds a new twelve-field object, with a constraint-strategy lookup, on every access, and
 * auth, rate limits and metrics all need the config.
 */
export function routeConfigOf (request: AnyRequest): RouteConfig {
  const facts = factsOf(request)
  return (facts.routeConfig ??= request.routeOptions.config as RouteConfig)
}

/** Records the upstream call's start; {@link endUpstreamCall} records its end. */
export function startUpstreamCall (request: AnyRequest): void {
  factsOf(request).upstreamStart = performance.now()
}

export function endUpstreamCall (request: AnyRequest, outcome: { status: number } | { failure: UpstreamFailureKind }): void {
  const found = factsOf(request)
  // A call the breaker or the bulkhead refused never reached the upstream: it has no duration.
  const called = !('failure' in outcome) || (outcome.failure !== 'circuit_open' && outcome.failure !== 'busy')
  if (called && found.upstreamStart !== undefined && found.upstreamMs === undefined) {
    found.upstreamMs = performance.now() - found.upstreamStart
  }
  if ('status' in outcome) found.upstreamStatus = outcome.status
  else found.upstreamFailure = outcome.failure
}
