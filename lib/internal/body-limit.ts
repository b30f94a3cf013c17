/**
 * The proxy's request bodies: refused over the limit, read whole when small, streamed otherwise.
 */
import { pipeline, Transform, type TransformCallback } from 'node:stream'
import { errorCodes, type FastifyRequest } from 'fastify'
import { BodyTooLargeError } from '../errors.js'

/**
 * A body declared at most this long (and typed) is read whole before the upstream call, and sent as
 * one buffer. 16 KiB is a request stream's own high-water mark: streaming buffers as much anyway.
 *
 * Why not stream it: with a streamed request body, Fastify's stream reply (two end-of-stream
 * listeners, one on the upstream body, one on the response) leaves every request's objects
 * reachable from old-generation garbage, and V8's scavenges promote them all. A 1 KiB POST through
 * bare @fastify/reply-from then spends ~17 µs of ~90 µs CPU in scavenges (40–46 % of the young
 * generation surviving each one), and the old generation swells to ~100 MiB between full
 * collections; read whole, the scavenges cost ~1 µs (docs/design.md (v)). It also means a client
 * that stops halfway through a small body never reaches the upstream at all.
 */
export const WHOLE_BODY_MAX_BYTES = 16 * 1024

class BodyLimitStream extends Transform {
  #remaining: number
  readonly #limit: number

  constructor (limit: number) {
    super()
    this.#limit = limit
    this.#remaining = limit
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#remaining -= chunk.length
    // Erroring destroys the stream: undici aborts the upstream request, so the upstream sees an
    // aborted request rather than a truncated body passed off as whole.
    if (this.#remaining < 0) callback(new BodyTooLargeError(this.#limit))
    else callback(null, chunk)
  }
}

function ignore (): void {}

/** The whole body, once it has arrived; an error when the client leaves before it has. */
function readWhole (payload: NodeJS.ReadableStream, done: (err: Error | null, body?: unknown) => void): void {
  const chunks: Buffer[] = []
  let length = 0
  let settled = false
  const settle = (error: Error | null): void => {
    if (settled) return
    settled = true
    done(error, error === null ? (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length)) : undefined)
  }
  // What Fastify's own parsers answer for a body shorter than declared (400, logged at debug by
  // the proxy); nothing was sent upstream. Node errors an incomplete HTTP/1 request with `aborted`;
  // an HTTP/2 stream that is reset may only close.
  const incomplete = (): void => { settle(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH()) }
  payload.on('data', (chunk: Buffer) => {
    chunks.push(chunk)
    length += chunk.length
  })
  payload.once('end', () => { settle(null) })
  payload.once('error', incomplete)
  payload.once('close', incomplete)
}

/**
 * A catch-all content-type parser for the proxy. A declared `Content-Length` over the limit is
 * refused before anything is forwarded; a small typed body within it is read whole (a `Buffer`,
 * see {@link WHOLE_BODY_MAX_BYTES}); any other body is handed over as the raw stream — a declared
 * length needs no counting (Node's parser never delivers more), a chunked body is counted as it flows.
 */
export function streamBodyWithin (limit: number) {
  return function passBodyThrough (
    request: FastifyRequest,
    payload: NodeJS.ReadableStream,
    done: (err: Error | null, body?: unknown) => void
  ): void {
    const declared = request.headers['content-length']
    if (declared !== undefined) {
      const length = Number(declared)
      if (length > limit) done(new BodyTooLargeError(limit))
      // reply-from sends a buffer with the Content-Type it is given; untyped bodies, and GET and
      // HEAD (whose body reply-from will not rewrite), keep the stream.
      else if (length > 0 && length <= WHOLE_BODY_MAX_BYTES && request.headers['content-type'] && request.method !== 'GET' && request.method !== 'HEAD') readWhole(payload, done)
      else done(null, payload)
      return
    }
    const limited = new BodyLimitStream(limit)
    pipeline(payload, limited, ignore)
    done(null, limited)
  }
}
