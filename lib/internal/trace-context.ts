/**
 * W3C trace context towards upstreams. Without OpenTelemetry the client's `traceparent` and
 * `tracestate` pass through. With it, its undici instrumentation *appends* the gateway's own
 * `traceparent` (child of the gateway's span, in the client's trace) to every upstream call, so
 * forwarding the client's copy as well would send two — which a W3C reader must treat as invalid
 * and restart the trace. Detected without depending on OpenTelemetry: its API's global registry
 * holds a propagator, and something listens to undici's request creation.
 */
import { channel } from 'node:diagnostics_channel'

const requestCreated = channel('undici:request:create')
// @opentelemetry/api keeps its globals under this key (major version 1).
const OTEL_API = Symbol.for('opentelemetry.js.api.1')

/** True when OpenTelemetry will inject its own trace context into the upstream call. */
export function traceContextInjectedUpstream (): boolean {
  return requestCreated.hasSubscribers && (globalThis as Record<symbol, { propagation?: unknown } | undefined>)[OTEL_API]?.propagation !== undefined
}
