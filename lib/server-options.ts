/**
 * The Fastify constructor options a gateway needs and a plugin cannot set: the request id is
 * assigned before the first log line, Fastify's own URL errors become problem documents, and a
 * slow client cannot hold a request open forever (Fastify's `requestTimeout` is 0, no limit).
 */
import { randomUUID } from 'node:crypto'
import type { ServerOptions } from 'node:http'
import type { Socket } from 'node:net'
import fastify, { type FastifyError, type FastifyLoggerOptions, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { GATEWAY_ERRORS, type GatewayErrorCode, InvalidOptionError, problemBody, PROBLEM_CONTENT_TYPE, sendProblem } from './errors.js'
import { toMilliseconds, type Duration } from './internal/duration.js'
import { isPlainObject, optionalObject, rejectUnknownKeys, stringList } from './internal/options.js'
import { CENSOR, createRequestSerializer, CREDENTIAL_HEADERS, CREDENTIAL_QUERY_PARAMETERS, credentialHeaderPaths } from './internal/redaction.js'
import { requestIdGenerator } from './plugins/correlation-id.js'

/**
 * Options of {@link gatewayServerOptions}.
 *
 * @example
 * ```ts
 * const app = Fastify({ ...gatewayServerOptions({ requestTimeout: '30s', idleTimeout: '65s', logger: { level: 'info' }, redact: { headers: ['x-partner-key'] } }) })
 * ```
 */
export interface GatewayServerOptions {
  /** Request id header, as given to `correlationId`. Default `x-request-id`. */
  requestIdHeader?: string
  /** Longest time to receive a whole request (headers and body). Default 60 s. */
  requestTimeout?: Duration
  /**
   * A connection with no activity for this long is closed — also one whose client stopped reading a
   * response, which would otherwise hold an upstream connection forever. Default 60 s.
   */
  idleTimeout?: Duration
  /**
   * Fastify's `logger` (`true` or pino options), returned with credentials redacted: `Authorization`,
   * `Cookie`, `Set-Cookie` and API-key headers wherever a log line holds headers, credential query
   * parameters in every logged URL. Default: no `logger` is returned (keep your own).
   */
  logger?: boolean | (FastifyLoggerOptions & Record<string, unknown>)
  /** More headers and query parameters to redact (e.g. your API-key header and parameter). */
  redact?: { headers?: string[], query?: string[] }
}

/** What {@link gatewayServerOptions} returns: spread it into `Fastify({ … })`. */
export interface GatewayFastifyOptions extends Pick<FastifyServerOptions, 'genReqId' | 'frameworkErrors' | 'requestTimeout' | 'clientErrorHandler' | 'connectionTimeout' | 'keepAliveTimeout' | 'disableRequestLogging' | 'return503OnClosing'> {
  http: ServerOptions
  logger?: FastifyLoggerOptions & Record<string, unknown>
  /** Fastify ≥ 5.8 (older versions get `disableRequestLogging`, which also silences error lines). */
  logController?: FastifyServerOptions extends { logController?: infer Controller } ? Controller : never
}

type LogControllerBase = typeof fastify extends { LogController: infer Base } ? Base : never

/**
 * Fastify's request lines, minus the two the access log replaces ("incoming request" carries the
 * URL with its query) and with "route not found" naming the path without its query. Error lines stay.
 */
function requestLogging (): Pick<GatewayFastifyOptions, 'logController' | 'disableRequestLogging'> {
  const Base = (fastify as { LogController?: LogControllerBase }).LogController
  if (Base === undefined) return { disableRequestLogging: true }
  class GatewayLogController extends (Base as new () => InstanceType<LogControllerBase>) {
    override incomingRequest (): void {}
    override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
      if (error != null) super.requestCompleted(error, request, reply)
    }

    override routeNotFound (request: FastifyRequest): void {
      const url = request.raw.url ?? ''
      request.log.info(`Route ${request.method}:${url.includes('?') ? url.slice(0, url.indexOf('?')) : url} not found`)
    }
  }
  return { logController: new GatewayLogController() as GatewayFastifyOptions['logController'] }
}

function answerFrameworkError (error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  // FST_ERR_BAD_URL: percent-encoding find-my-way cannot decode; its own body would echo the path.
  sendProblem(reply, error.code === 'FST_ERR_BAD_URL' ? 'GATEWAY_ERR_BAD_REQUEST_TARGET' : 'GATEWAY_ERR_BAD_REQUEST')
}

/**
 * Node's parser refuses malformed requests (bad framing, control bytes, oversized headers, slow
 * clients) before Fastify sees them; answer those with a problem document too, then close.
 */
function answerClientError (error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const code: GatewayErrorCode = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? 'GATEWAY_ERR_REQUEST_TIMEOUT'
    : error.code === 'HPE_HEADER_OVERFLOW' ? 'GATEWAY_ERR_HEADERS_TOO_LARGE' : 'GATEWAY_ERR_BAD_REQUEST'
  const { status, title } = GATEWAY_ERRORS[code]
  const body = problemBody(code, randomUUID())
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${title}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/**
 * Options to spread into the Fastify constructor of a gateway.
 *
 * @example
 * ```ts
 * const app = Fastify({ logger: true, trustProxy: ['10.0.0.0/8'], ...gatewayServerOptions() })
 * await app.register(gateway, { auth: { jwt: { issuer: 'https://id.example.com/', audience: 'orders-api' } }, services })
 * ```
 */
export function gatewayServerOptions (input?: GatewayServerOptions): GatewayFastifyOptions {
  const options = optionalObject(input, 'serverOptions')
  rejectUnknownKeys(options, ['requestIdHeader', 'requestTimeout', 'idleTimeout', 'logger', 'redact'], 'serverOptions')
  const redact = optionalObject(options.redact, 'serverOptions.redact')
  rejectUnknownKeys(redact, ['headers', 'query'], 'serverOptions.redact')
  const logger = redactingLogger(options.logger, stringList(redact.headers, 'serverOptions.redact.headers'), stringList(redact.query, 'serverOptions.redact.query'))
  const requestTimeout = options.requestTimeout === undefined ? 60_000 : toMilliseconds(options.requestTimeout, 'serverOptions.requestTimeout')
  const idleTimeout = options.idleTimeout === undefined ? 60_000 : toMilliseconds(options.idleTimeout, 'serverOptions.idleTimeout')
  return {
    // Node keeps headersTimeout (60 s) ≤ requestTimeout by swapping them; set both so that a shorter
    // requestTimeout really shortens the whole-request limit. Node enforces both only every
    // connectionsCheckingInterval (30 s): check at a quarter of the timeout instead.
    http: {
      headersTimeout: Math.min(requestTimeout, 60_000),
      requestTimeout,
      connectionsCheckingInterval: Math.min(30_000, Math.max(250, Math.floor(requestTimeout / 4)))
    },
    genReqId: requestIdGenerator({ header: options.requestIdHeader as string | undefined }),
    frameworkErrors: answerFrameworkError as FastifyServerOptions['frameworkErrors'],
    clientErrorHandler: answerClientError,
    requestTimeout,
    connectionTimeout: idleTimeout,
    // Node times an idle keep-alive connection out with keepAliveTimeout (Fastify's 72 s), not the
    // socket timeout: the same bound applies between requests.
    keepAliveTimeout: idleTimeout,
    // The gateway's access log writes one line per request instead of Fastify's two, without the URL.
    ...requestLogging(),
    // During close() the request guard answers new requests with a problem document (503 with
    // Retry-After), instead of Fastify's own JSON body.
    return503OnClosing: false,
    ...(logger === undefined ? {} : { logger })
  }
}

/** The caller's logger options with credential headers redacted and URLs censored. */
function redactingLogger (input: unknown, headers: string[], query: string[]): GatewayFastifyOptions['logger'] {
  if (input === undefined || input === false) return undefined
  if (input !== true && !isPlainObject(input)) throw new InvalidOptionError('serverOptions.logger', 'expected true or pino options')
  const own = input === true ? {} : input
  const ownRedact = own.redact
  const paths = [
    ...credentialHeaderPaths([...CREDENTIAL_HEADERS, ...headers.map((name) => name.toLowerCase())]),
    ...(Array.isArray(ownRedact) ? ownRedact as string[] : isPlainObject(ownRedact) && Array.isArray(ownRedact.paths) ? ownRedact.paths as string[] : [])
  ]
  return {
    ...own,
    redact: { paths, censor: isPlainObject(ownRedact) && ownRedact.censor !== undefined ? ownRedact.censor : CENSOR },
    serializers: { req: createRequestSerializer([...CREDENTIAL_QUERY_PARAMETERS, ...query]), ...(isPlainObject(own.serializers) ? own.serializers : {}) }
  }
}
