/**
 * The outcome of a proxied call that runs in a breaker, reported once: by reply-from's hooks (a
 * transport failure), by the response stream (an error mid-body), or when the client's response
 * closes (the upstream status's verdict if the whole body went out, else not counted).
 */
import type { FastifyReply } from 'fastify'
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
export const outcomes = new WeakMap<object, PendingOutcome>()
// A client that went away, or a response that ended without our hooks: not the upstream's fault.
const RESPONSE_CLOSED = 'GATEWAY_RESPONSE_CLOSED'

export function settle (request: object, failure: Error | undefined): void {
  const pending = outcomes.get(request)
  if (pending === undefined) return
  outcomes.delete(request)
  pending.circuit.record(pending.ticket, failure)
}

/** The response is closed: the status decides if the whole upstream body was written out, else it is not counted. */
export function settleOnClose (request: object, reply: FastifyReply): void {
  const pending = outcomes.get(request)
  if (pending === undefined) return
  settle(request, pending.verdict !== undefined && reply.raw.writableEnded ? (pending.verdict ?? undefined) : new NotCountedError(RESPONSE_CLOSED))
}
