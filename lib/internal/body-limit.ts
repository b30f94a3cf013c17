/** Streams a request body through unparsed, refusing it once it grows past the limit. */
import { pipeline, Transform, type TransformCallback } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { BodyTooLargeError } from '../errors.js'

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

/**
 * A catch-all content-type parser that hands the raw body stream to the proxy. A declared
 * `Content-Length` over the limit is refused before anything is forwarded; a declared length within
 * it needs no counting (Node's parser never delivers more); a chunked body is counted as it flows.
 */
export function streamBodyWithin (limit: number) {
  return function passBodyThrough (
    request: FastifyRequest,
    payload: NodeJS.ReadableStream,
    done: (err: Error | null, body?: unknown) => void
  ): void {
    const declared = request.headers['content-length']
    if (declared !== undefined) {
      if (Number(declared) > limit) done(new BodyTooLargeError(limit))
      else done(null, payload)
      return
    }
    const limited = new BodyLimitStream(limit)
    pipeline(payload, limited, ignore)
    done(null, limited)
  }
}
