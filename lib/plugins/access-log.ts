/**
 * access-log: one structured line per request, written when the response is done, with what an
 * operator needs to answer "what happened to this request" — route pattern, service, consumer,
 * status, the upstream's status and latency, the total latency, bytes — and no credential: the
 * line holds no URL, no header, no query. Every route also gets a `req` log serializer that
 * censors credential query parameters, so Fastify's own "incoming request" line cannot leak an
 * API key either.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError } from '../errors.js'
import { optionalObject, rejectUnknownKeys, stringList } from '../internal/options.js'
import { createRequestSerializer, CREDENTIAL_QUERY_PARAMETERS } from '../internal/redaction.js'
import { recordedFacts, routeConfigOf } from '../internal/request-facts.js'

/**
 * Options of the {@link accessLog} plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, accessLog: { level: 'info', redactQuery: ['session'] } })
 * ```
 */
export interface AccessLogOptions {
  /** Level of the access line. Default `info`. */
  level?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'
  /** More query parameters to censor in logged URLs (beyond `api_key`, `access_token`, `token`, … and the API-key parameter). */
  redactQuery?: string[]
}

/** pino's level check (Fastify's stand-in logger without a logger has none). */
interface LevelCheck { isLevelEnabled: (level: string) => boolean }

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const

function normalizeAccessLogOptions (input: unknown) {
  const options = optionalObject(input, 'accessLog')
  rejectUnknownKeys(options, ['level', 'redactQuery'], 'accessLog')
  const level = options.level ?? 'info'
  if (!LEVELS.includes(level as typeof LEVELS[number])) throw new InvalidOptionError('accessLog.level', `expected one of ${LEVELS.join(', ')}`)
  return Object.freeze({
    level: level as typeof LEVELS[number],
    redactQuery: Object.freeze([...CREDENTIAL_QUERY_PARAMETERS, ...stringList(options.redactQuery, 'accessLog.redactQuery')])
  })
}

const accessLogPlugin: FastifyPluginAsync<AccessLogOptions> = async function accessLog (fastify, input) {
  const { level, redactQuery } = normalizeAccessLogOptions(input)
  const serializeRequest = createRequestSerializer(redactQuery)
  // Without a logger Fastify's stand-in has no levels: nothing would be written, so pay nothing.
  const logging = typeof (fastify.log as Partial<LevelCheck>).isLevelEnabled === 'function'

  if (!logging) return
  fastify.addHook('onRoute', function censorLoggedUrls (route: RouteOptions) {
    // A route (or its plugin) with a `req` serializer of its own keeps it.
    if (route.logSerializers?.req !== undefined) return
    route.logSerializers = Object.assign(Object.create(route.logSerializers ?? null), { req: serializeRequest })
  })

  fastify.addHook('onResponse', function writeAccessLine (request: FastifyRequest, reply: FastifyReply, done) {
    if (!(request.log as unknown as LevelCheck).isLevelEnabled(level)) {
      done()
      return
    }
    const facts = recordedFacts(request)
    const config = routeConfigOf(request)
    request.log[level]({
      method: request.method,
      route: config.url ?? 'unmatched',
      service: config.gateway?.service,
      consumer: request.consumer?.id,
      status: reply.statusCode,
      upstreamStatus: facts?.upstreamStatus,
      upstreamFailure: facts?.upstreamFailure,
      upstreamMs: facts?.upstreamMs === undefined ? undefined : Math.round(facts.upstreamMs * 1000) / 1000,
      durationMs: Math.round(reply.elapsedTime * 1000) / 1000,
      bytes: bytesSent(request, reply),
      authFailure: facts?.authFailure,
      rateLimited: facts?.rateLimited
    }, 'access')
    done()
  })
}

// Per HTTP/1 connection, the socket's byte count at the end of its previous response.
const writtenBefore = new WeakMap<object, number>()

/**
 * Bytes sent for this response, headers included (nginx's `$bytes_sent`), also for streamed bodies
 * without Content-Length. HTTP/1 answers one request at a time per connection, so the socket's
 * count since its previous response is this response; elsewhere (HTTP/2, inject) the Content-Length.
 */
function bytesSent (request: FastifyRequest, reply: FastifyReply): number | undefined {
  const socket = request.raw.socket as { bytesWritten?: unknown } | undefined
  if (request.raw.httpVersionMajor === 1 && socket !== undefined && typeof socket.bytesWritten === 'number') {
    const total = socket.bytesWritten
    const before = writtenBefore.get(socket) ?? 0
    writtenBefore.set(socket, total)
    return total - before
  }
  const length = reply.getHeader('content-length')
  return length === undefined ? undefined : Number(length)
}

/**
 * One structured access line per request, and credential query parameters censored in every
 * logged URL. Registered by the umbrella unless `accessLog: false`.
 *
 * @example
 * ```ts
 * await app.register(accessLog, { level: 'info', redactQuery: ['session'] })
 * // {"level":30,"reqId":"…","method":"GET","route":"/api/v1/users/*","service":"users","consumer":"u-42",
 * //  "status":200,"upstreamStatus":200,"upstreamMs":3.1,"durationMs":4.2,"bytes":512,"msg":"access"}
 * ```
 */
export const accessLog = fp(accessLogPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.access-log'
})
