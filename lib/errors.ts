/**
 * Every error the gateway produces, as data. Responses are RFC 9457 problem documents sent by the
 * plugin itself, so the host application's error handler is never involved; boot-time errors are
 * thrown as `@fastify/error` instances. `docs/errors.md` lists every code (a test keeps them in step).
 */
import createError from '@fastify/error'
import type { FastifyReply } from 'fastify'

/**
 * Status and title of every problem the gateway answers with.
 *
 * @example
 * ```ts
 * const { status, title } = GATEWAY_ERRORS.GATEWAY_ERR_RATE_LIMITED // 429, 'Too many requests'
 * ```
 */
export const GATEWAY_ERRORS = {
  GATEWAY_ERR_BAD_REQUEST: { status: 400, title: 'Bad request' },
  GATEWAY_ERR_BAD_REQUEST_TARGET: { status: 400, title: 'Bad request target' },
  GATEWAY_ERR_UNAUTHENTICATED: { status: 401, title: 'Unauthenticated' },
  GATEWAY_ERR_FORBIDDEN: { status: 403, title: 'Forbidden' },
  GATEWAY_ERR_METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  GATEWAY_ERR_REQUEST_TIMEOUT: { status: 408, title: 'Request timeout' },
  GATEWAY_ERR_BODY_TOO_LARGE: { status: 413, title: 'Request body too large' },
  GATEWAY_ERR_RATE_LIMITED: { status: 429, title: 'Too many requests' },
  GATEWAY_ERR_HEADERS_TOO_LARGE: { status: 431, title: 'Request header fields too large' },
  GATEWAY_ERR_INTERNAL: { status: 500, title: 'Internal gateway error' },
  GATEWAY_ERR_UPSTREAM_UNAVAILABLE: { status: 502, title: 'Upstream unavailable' },
  GATEWAY_ERR_AUTH_UNAVAILABLE: { status: 503, title: 'Authentication unavailable' },
  GATEWAY_ERR_RATE_LIMIT_STORE: { status: 503, title: 'Rate-limit store unavailable' },
  GATEWAY_ERR_CIRCUIT_OPEN: { status: 503, title: 'Service temporarily unavailable' },
  GATEWAY_ERR_SERVICE_BUSY: { status: 503, title: 'Service busy' },
  GATEWAY_ERR_SHUTTING_DOWN: { status: 503, title: 'Gateway shutting down' },
  GATEWAY_ERR_NOT_READY: { status: 503, title: 'Not ready' },
  GATEWAY_ERR_UPSTREAM_TIMEOUT: { status: 504, title: 'Upstream timeout' }
} as const satisfies Record<string, { status: number, title: string }>

/**
 * A code the gateway can answer a request with.
 *
 * @example
 * ```ts
 * function isUpstreamTrouble (code: GatewayErrorCode): boolean {
 *   return code === 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE' || code === 'GATEWAY_ERR_UPSTREAM_TIMEOUT' || code === 'GATEWAY_ERR_CIRCUIT_OPEN'
 * }
 * ```
 */
export type GatewayErrorCode = keyof typeof GATEWAY_ERRORS

/**
 * The body of every response the gateway itself produces (`application/problem+json`).
 *
 * @example
 * ```ts
 * const response = await app.inject({ url: '/api/v1/orders' })
 * const problem = response.json<GatewayProblem>() // { type, title, status: 401, code: 'GATEWAY_ERR_UNAUTHENTICATED', requestId }
 * ```
 */
export interface GatewayProblem {
  type: string
  title: string
  status: number
  code: GatewayErrorCode
  requestId: string
  detail?: string
}

/**
 * The content type of every problem document the gateway sends (RFC 9457).
 *
 * @example
 * ```ts
 * reply.code(400).header('content-type', PROBLEM_CONTENT_TYPE).send(problemBody('GATEWAY_ERR_BAD_REQUEST', request.id))
 * ```
 */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8'

/**
 * Build the problem document for `code`. `detail` must never carry an upstream address, a stack, a
 * token or a library message: callers pass fixed strings only.
 *
 * @example
 * ```ts
 * socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\n\r\n${problemBody('GATEWAY_ERR_BAD_REQUEST', randomUUID())}`)
 * ```
 */
export function problemBody (code: GatewayErrorCode, requestId: string, detail?: string): string {
  const { status, title } = GATEWAY_ERRORS[code]
  const problem: GatewayProblem = { type: `urn:fastify-gateway:error:${code}`, title, status, code, requestId }
  if (detail !== undefined) problem.detail = detail
  return JSON.stringify(problem)
}

/**
 * Answer the request with the problem for `code`.
 *
 * @example
 * ```ts
 * app.addHook('onRequest', async (request, reply) => {
 *   if (!request.headers['x-tenant']) return sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST', { detail: 'x-tenant is required' })
 * })
 * ```
 */
export function sendProblem<Reply extends FastifyReply<any, any, any, any, any, any, any, any>> (
  reply: Reply,
  code: GatewayErrorCode,
  options?: { detail?: string, headers?: Record<string, string | number> }
): Reply {
  reply.code(GATEWAY_ERRORS[code].status)
  reply.header('content-type', PROBLEM_CONTENT_TYPE)
  if (options?.headers !== undefined) reply.headers(options.headers)
  reply.send(problemBody(code, reply.request.id, options?.detail))
  return reply
}

/**
 * Thrown at registration when an option is invalid; the message names the option path.
 *
 * @example
 * ```ts
 * try {
 *   await app.register(gateway, { auth: false, services: { users: { upstream: 'ftp://users', prefix: '/users' } } })
 * } catch (error) {
 *   console.error((error as { code: string }).code) // GATEWAY_ERR_INVALID_OPTION, naming services.users.upstream
 * }
 * ```
 */
export const InvalidOptionError = createError<[string, string]>(
  'GATEWAY_ERR_INVALID_OPTION', 'Invalid gateway option "%s": %s', 500, TypeError)

/** Raised inside the proxy when a streamed request body grows past the service's limit. */
export const BodyTooLargeError = createError<[number]>(
  'GATEWAY_ERR_BODY_TOO_LARGE', 'Request body exceeds %d bytes', 413)
