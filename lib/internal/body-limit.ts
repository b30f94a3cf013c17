/**
 * The proxy's request bodies: refused over the limit, read whole when small, streamed otherwise.
 */
import { pipeline, Transform, type TransformCallback } from 'node:stream'
import { errorCodes, type FastifyRequest } from 'fastify'
import { BodyTooLargeError } from '../errors.js'

/**
 * A body declared at most this long (and typed) is read whole before the upstream call, and sent as
 * one buffer. A request stream may buffer four times as much (its high-water mark is 64 KiB), so
 * this holds no more per request than streaming can. A streamed 32 KiB POST does not show the
 * scavenges below, and reading it whole gained nothing.
 *
 * Why not stream it: with a streamed request body answered through Fastify's stream reply (which
 * watches both the upstream body and the response with `stream.finished`), V8's scavenges promote
 * nearly every request's objects (40–46 % of the young generation survives each one; what keeps
 * them alive we did not pin down). A 1 KiB POST through bare @fastify/reply-from then spends
 * ~16 µs of ~80 µs CPU in scavenges and its old generation swells to 70–90 MiB between full
 * collections; read whole, the scavenges cost ~1 µs (docs/design.md (ab)). It also means a client
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
