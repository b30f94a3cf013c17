/**
 * The outcome of a proxied call that runs in a breaker, reported once: by reply-from's hooks (a
 * transport failure), by the response stream (an error mid-body), or when the client's response
 * closes (the upstream status's verdict if the whole body went out, else not counted).
 */
import type { ServerResponse } from 'node:http'
import type { Http2ServerResponse } from 'node:http2'
import { NotCountedError, type CallTicket, type Circuit } from './circuit.js'

/** A failure the breaker counts: the upstream answered with a failure status (5xx). */
export class UpstreamStatusError extends Error {
  readonly code = 'GATEWAY_UPSTREAM_STATUS'
}

/**
 * A proxied call that runs in a breaker, until its outcome is recorded. `verdict` is what the
 * upstream's status says (null: success), known in onResponse and recorded once the body is through.
 */
export interface PendingOutcome {
  readonly circuit: Circuit
  readonly ticket: CallTicket
  verdict: Error | null | undefined
}

// Kept on the client's response, whose `close` ends every call: one shared listener reads it there,
// instead of a closure and a WeakMap entry per request.
const kPendingOutcome = Symbol('fastify-gateway.pending-outcome')
/** The client's response (HTTP/1 or HTTP/2). */
type ClientResponse = ServerResponse | Http2ServerResponse
type WithPendingOutcome = ClientResponse & { [kPendingOutcome]?: PendingOutcome | undefined }

// A client that went away, or a response that ended without our hooks: not the upstream's fault.
const RESPONSE_CLOSED = 'GATEWAY_RESPONSE_CLOSED'

/** Starts waiting for the outcome of the call answering `response`. */
export function awaitOutcome (response: ClientResponse, circuit: Circuit, ticket: CallTicket): void {
  (response as WithPendingOutcome)[kPendingOutcome] = { circuit, ticket, verdict: undefined }
  response.on('close', settleOnClose)
}

/** The call answering `response`, while its outcome is not recorded. */
export function pendingOutcome (response: ClientResponse): PendingOutcome | undefined {
  return (response as WithPendingOutcome)[kPendingOutcome]
}

export function settle (response: ClientResponse, failure: Error | undefined): void {
  const pending = (response as WithPendingOutcome)[kPendingOutcome]
  if (pending === undefined) return
  ;(response as WithPendingOutcome)[kPendingOutcome] = undefined
  pending.circuit.record(pending.ticket, failure)
}

/** The response is closed: the status decides if the whole upstream body was written out, else it is not counted. */
function settleOnClose (this: ClientResponse): void {
  const pending = (this as WithPendingOutcome)[kPendingOutcome]
  if (pending === undefined) return
  settle(this, pending.verdict !== undefined && this.writableEnded ? (pending.verdict ?? undefined) : new NotCountedError(RESPONSE_CLOSED))
}
