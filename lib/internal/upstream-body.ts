/**
 * Upstream response bodies: read whole and sent as one buffer when declared small, streamed
 * otherwise (docs/design.md (ac)).
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { WHOLE_BODY_MAX_BYTES } from './body-limit.js'

/**
 * True when the response's body is read whole before the client gets anything: a declared
 * `Content-Length` of 1 byte to {@link WHOLE_BODY_MAX_BYTES}, and a `Content-Type` (Fastify would
 * invent `application/octet-stream` for an untyped buffer). HEAD answers, 204 and 304 have no body.
 *
 * Why: a streamed response goes through Fastify's stream reply — a pipe, a `stream.finished` watcher
 * on either side, the head and the body written separately — which costs more than all of the
 * gateway's proxy-only policy; a buffer is written with the head in one `end()` (the figures are in
 * docs/design.md (ac)). The body of a small response usually arrives with its head, so nothing
 * waits; and a body that breaks before its end is answered with a problem (502/504), never passed
 * on cut short.
 */
export function isReadWhole (method: string | undefined, status: number, headers: IncomingHttpHeaders): boolean {
  const declared = headers['content-length']
  if (declared === undefined || headers['content-type'] === undefined || method === 'HEAD' || status === 204 || status === 304) return false
  const length = Number(declared)
  return length > 0 && length <= WHOLE_BODY_MAX_BYTES
}

/**
 * Reads an upstream body to its end: `done(null, body)`, or `done(error)` once, when it errors (a
 * reset, undici's body timeout, a length mismatch). Bounded: undici never delivers more than the
 * declared length, its body timeout ends a stalled body, and it ends every body it gives with
 * 'end' or 'error'. No 'close' listener: with one, the proxy-only gateway cost 1.19–1.25 × bare
 * reply-from in CPU per small GET instead of 0.91–0.97 (focused runs minutes apart; cause not
 * pinned down).
 */
export function readUpstreamBody (stream: Readable, done: (error: Error | null, body?: Buffer) => void): void {
  const chunks: Buffer[] = []
  let length = 0
  let settled = false
  const settle = (error: Error | null): void => {
    if (settled) return
    settled = true
    done(error, error === null ? (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length)) : undefined)
  }
  stream.on('data', (chunk: Buffer) => {
    chunks.push(chunk)
    length += chunk.length
  })
  stream.once('end', () => { settle(null) })
  stream.once('error', settle)
}
