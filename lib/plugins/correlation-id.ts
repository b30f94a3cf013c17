/**
 * correlation-id: one validated request id per request — in the reply header, in every log line
 * (`reqId`), in problem bodies and on the upstream request — and W3C trace context passed through
 * only when well-formed.
 */
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { headerName, optionalObject, rejectUnknownKeys } from '../internal/options.js'

/**
 * Options of the {@link correlationId} plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, correlationId: { header: 'x-correlation-id' } })
 * ```
 */
export interface CorrelationIdOptions {
  /** Header carrying the request id in and out. Default `x-request-id`. */
  header?: string
}

const DEFAULTS = { header: 'x-request-id' } as const

// Bounded length and a charset that cannot break a log line, a header or a query (hono's request-id
// middleware does the same): anything else is replaced, never trusted.
const ACCEPTABLE_ID = /^[A-Za-z0-9._:+=-]{1,128}$/
// https://www.w3.org/TR/trace-context/#traceparent-header-field-values — version 00 is exactly four
// fields; a later version may append fields, which a version-00 reader must accept (§ 3.2.4).
const TRACEPARENT = /^(?:00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}|(?!00|ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-[\x21-\x7e]*)?)$/

// Symbol.for, so that the marker survives the dual ESM/CJS package hazard.
const kIdAssigned = Symbol.for('fastify-gateway.request-id-assigned')
type MarkedRequest = IncomingMessage & { [kIdAssigned]?: true }

function normalizeCorrelationIdOptions (input: unknown): Readonly<{ header: string }> {
  const options = optionalObject(input, 'correlationId')
  rejectUnknownKeys(options, ['header'], 'correlationId')
  return Object.freeze({
    header: options.header === undefined ? DEFAULTS.header : headerName(options.header, 'correlationId.header')
  })
}

function acceptOrCreateId (incoming: string | string[] | undefined): string {
  return typeof incoming === 'string' && ACCEPTABLE_ID.test(incoming) ? incoming : randomUUID()
}

/**
 * A `genReqId` for the Fastify constructor that honours a valid incoming request id. With it, even
 * Fastify's own "incoming request" log line carries the gateway's id; without it, the plugin fixes
 * the id up in its first hook (one child logger per request more).
 *
 * @example
 * ```ts
 * const app = Fastify({ logger: true, genReqId: requestIdGenerator() })
 * await app.register(correlationId)
 * ```
 */
export function requestIdGenerator (options?: CorrelationIdOptions): (req: IncomingMessage) => string {
  const { header } = normalizeCorrelationIdOptions(options)
  return function genReqId (req: MarkedRequest): string {
    req[kIdAssigned] = true
    return acceptOrCreateId(req.headers[header])
  }
}

/**
 * True for a syntactically valid W3C `traceparent` value.
 *
 * @example
 * ```ts
 * isValidTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') // true
 * isValidTraceparent('00-0000-bad') // false
 * ```
 */
export function isValidTraceparent (value: unknown): boolean {
  return typeof value === 'string' && TRACEPARENT.test(value)
}

const correlationIdPlugin: FastifyPluginAsync<CorrelationIdOptions> = async function correlationId (fastify, input) {
  const { header } = normalizeCorrelationIdOptions(input)
  const logLabel = fastify.initialConfig.requestIdLogLabel ?? 'reqId'

  fastify.addHook('onRequest', function assignRequestId (request, reply, done) {
    const raw: MarkedRequest = request.raw
    if (raw[kIdAssigned] !== true) {
      const id = acceptOrCreateId(raw.headers[header])
      request.id = id
      // A child of request.log keeps the route's serializers (the proxy's redacting `err`); its lines
      // carry reqId twice, the gateway's last, which JSON readers keep. gatewayServerOptions() avoids this.
      request.log = request.log.child({ [logLabel]: id })
      reply.log = request.log
    }
    reply.header(header, request.id)
    // An invalid traceparent is dropped with its tracestate rather than forwarded (W3C § 3.3.3).
    if (raw.headers.traceparent !== undefined && !isValidTraceparent(raw.headers.traceparent)) {
      delete raw.headers.traceparent
      delete raw.headers.tracestate
    }
    done()
  })
}

/**
 * Assigns every request one validated id. Register it first (the {@link gateway} umbrella does).
 *
 * @example
 * ```ts
 * await app.register(correlationId, { header: 'x-request-id' })
 * ```
 */
export const correlationId = fp(correlationIdPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.correlation-id'
})
