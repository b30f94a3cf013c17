/**
 * request-guard: the first decision on every request, before CORS, auth or routing to a service.
 * Refuses ambiguous request targets and methods a gateway must not forward, removes headers only
 * the gateway may set, and resolves `Connection`-nominated headers while the request is still the
 * client's — so nothing added later by the gateway can be stripped by the client.
 */
import type { Socket } from 'node:net'
import type { IncomingMessage } from 'node:http'
import { randomUUID } from 'node:crypto'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, problemBody, PROBLEM_CONTENT_TYPE, sendProblem } from '../errors.js'
import { DEFAULT_IDENTITY_HEADERS, dropConnectionNominated, separatorSpellings } from '../internal/headers.js'
import { headerName, optionalObject, rejectUnknownKeys, stringList } from '../internal/options.js'
import { isCanonicalRequestTarget, REFUSED_METHODS } from '../internal/request-target.js'

/**
 * Options of the {@link requestGuard} plugin.
 *
 * @example
 * ```ts
 * await app.register(requestGuard, { identityHeaders: ['x-tenant-id'] }) // client copies of x-tenant-id are removed
 * ```
 */
export interface RequestGuardOptions {
  /**
   * Headers only the gateway may set, removed from every incoming request whatever their case or
   * count. `x-consumer-id` and `x-consumer-scopes` are always included.
   */
  identityHeaders?: string[]
}

function normalizeRequestGuardOptions (input: unknown): Readonly<{ identityHeaders: ReadonlySet<string> }> {
  const options = optionalObject(input, 'requestGuard')
  rejectUnknownKeys(options, ['identityHeaders'], 'requestGuard')
  const names = new Set<string>()
  const configured = stringList(options.identityHeaders, 'requestGuard.identityHeaders')
  const validated = configured.map((name, i) => headerName(name, `requestGuard.identityHeaders[${i}]`))
  for (const name of [...DEFAULT_IDENTITY_HEADERS, ...validated]) {
    const spellings = separatorSpellings(name)
    if (spellings === undefined) throw new InvalidOptionError('requestGuard.identityHeaders', `"${name}" has too many separators`)
    for (const spelling of spellings) names.add(spelling)
  }
  return Object.freeze({ identityHeaders: names as ReadonlySet<string> })
}

// RFC 9110 § 15.5.6: a 405 lists the methods the gateway can serve.
const ALLOWED_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'

/** Node answers CONNECT itself, before Fastify: refuse it with the same problem document. */
function refuseConnect (req: IncomingMessage, socket: Socket): void {
  const body = problemBody('GATEWAY_ERR_METHOD_NOT_ALLOWED', randomUUID())
  socket.end(
    'HTTP/1.1 405 Method Not Allowed\r\n' +
    `content-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    `allow: ${ALLOWED_METHODS}\r\nconnection: close\r\n\r\n` + body)
  req.destroy()
}

const requestGuardPlugin: FastifyPluginAsync<RequestGuardOptions> = async function requestGuard (fastify, input) {
  const { identityHeaders } = normalizeRequestGuardOptions(input)

  if (fastify.server.listenerCount('connect') === 0) fastify.server.on('connect', refuseConnect)

  fastify.addHook('onRequest', function guardRequest (request, reply, done) {
    const raw = request.raw
    // Once close() has begun, Fastify marks every HTTP/1 response `Connection: close` before any
    // hook: a request that still arrives on an open connection is refused with a problem
    // (gatewayServerOptions() turns Fastify's own JSON 503 off so that this hook answers). A
    // preClose hook would delay the listener's close by a tick and let new connections in.
    if (reply.raw.getHeader('connection') === 'close') {
      sendProblem(reply, 'GATEWAY_ERR_SHUTTING_DOWN', { headers: { 'retry-after': 1, connection: 'close' } })
      return
    }
    if (REFUSED_METHODS.has(raw.method ?? '')) {
      request.log.debug('refused method')
      sendProblem(reply, 'GATEWAY_ERR_METHOD_NOT_ALLOWED', { headers: { allow: ALLOWED_METHODS } })
      return
    }
    if (!isCanonicalRequestTarget(raw.url ?? '')) {
      request.log.debug('refused ambiguous request target')
      sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST_TARGET')
      return
    }
    const headers = raw.headers
    if (headers.connection !== undefined) dropConnectionNominated(headers)
    // Node lower-cases header names and joins duplicates of unknown headers into one value: one
    // delete per spelling removes every case and every copy. The request's few headers are walked
    // instead of deleting every spelling: a `delete` of an absent name costs ~0.25 µs.
    for (const name in headers) if (identityHeaders.has(name)) delete headers[name]
    done()
  })
}

/**
 * Refuses ambiguous request targets (dot segments raw or encoded, `\`, encoded separators, `//`,
 * `#`, absolute form) with 400 and CONNECT/TRACE with 405, and removes client-sent identity headers.
 *
 * @example
 * ```ts
 * await app.register(requestGuard, { identityHeaders: ['x-tenant-id'] })
 * ```
 */
export const requestGuard = fp(requestGuardPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.request-guard',
  dependencies: ['fastify-gateway.correlation-id']
})
