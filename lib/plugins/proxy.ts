/**
 * proxy: turns the `services` table into routes that forward to upstreams through
 * @fastify/reply-from, with every unsafe default of reply-from overridden (see docs/proxy.md).
 * Routes are ordinary Fastify routes carrying `config.gateway.service`, so every policy plugin
 * sees them like the team's own routes.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyError, FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import replyFrom, { type FastifyReplyFromHooks } from '@fastify/reply-from'
import fp from 'fastify-plugin'
import { Agent, errors as undiciErrors } from 'undici'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { streamBodyWithin } from '../internal/body-limit.js'
import { CONSUMED_BY_GATEWAY, FORWARDING_HEADERS, HOP_BY_HOP_HEADERS } from '../internal/headers.js'
import { headerName, optionalObject, rejectUnknownKeys } from '../internal/options.js'
import { resolveServices, type ResolvedService } from '../internal/service-options.js'
import { createBalancer, type BalancedTarget } from '../internal/balancer.js'
import { createRetryPolicy } from '../internal/retry-policy.js'
import { awaitOutcome, pendingOutcome, settle, UpstreamStatusError } from '../internal/breaker-outcomes.js'
import { startHealthChecks } from '../internal/health-checks.js'
import { copyUpstreamHeaders, removeUpstreamHeaders } from '../internal/upstream-response-headers.js'
import { isReadWhole, readUpstreamBody } from '../internal/upstream-body.js'
import { declareRequestFacts, endUpstreamCall, startUpstreamCall } from '../internal/request-facts.js'
import { traceContextInjectedUpstream } from '../internal/trace-context.js'
import { classifyUpstreamError, rootErrorCode, serializeUpstreamError, upstreamFailureKind } from '../internal/upstream-errors.js'
import { circuitOf } from './breaker.js'
import { NotCountedError, REFUSED, type CallTicket, type Circuit } from '../internal/circuit.js'
import type { GatewayServiceOptions } from '../types.js'

/**
 * Options of the {@link proxy} plugin.
 *
 * @example
 * ```ts
 * await app.register(proxy, { services: { users: { upstream: 'http://users:8001', prefix: '/api/v1/users' } }, requestIdHeader: 'x-request-id' })
 * ```
 */
export interface ProxyOptions {
  /** The upstream services, by name. */
  services: Record<string, GatewayServiceOptions>
  /** Header carrying the request id to upstreams; use the same as `correlationId`. Default `x-request-id`. */
  requestIdHeader?: string
}

// reply-from's hooks are typed for every server kind (HTTP/2 included).
type AnyReply = FastifyReply<any, any, any, any, any, any, any, any>

const DEFAULTS = { requestIdHeader: 'x-request-id' } as const
const REMOVED_UPSTREAM_REQUEST_HEADERS: ReadonlySet<string> = new Set([...HOP_BY_HOP_HEADERS, ...FORWARDING_HEADERS, ...CONSUMED_BY_GATEWAY])
const TRACE_CONTEXT_HEADERS: ReadonlySet<string> = new Set(['traceparent', 'tracestate'])
// reply-from copies whatever `rewriteHeaders` returns onto the reply before it checks the status
// code; returning nothing and copying in `onResponse` keeps an invalid upstream status (888) from
// leaking upstream headers onto our 502.
const NO_HEADERS = Object.freeze({})

function normalizeProxyOptions (input: unknown) {
  const options = optionalObject(input, 'proxy')
  rejectUnknownKeys(options, ['services', 'requestIdHeader'], 'proxy')
  return Object.freeze({
    services: resolveServices(options.services),
    requestIdHeader: options.requestIdHeader === undefined
      ? DEFAULTS.requestIdHeader
      : headerName(options.requestIdHeader, 'proxy.requestIdHeader')
  })
}

function createAgent (service: ResolvedService): Agent {
  return new Agent({
    // reply-from builds its own undici pool with TLS verification off and 300 s timeouts; ours
    // verifies certificates (optionally against the service's CA) and bounds every wait.
    connect: { timeout: service.timeouts.connect, rejectUnauthorized: true, ...(service.ca === undefined ? {} : { ca: [...service.ca] }) },
    headersTimeout: service.timeouts.headers,
    bodyTimeout: service.timeouts.body,
    connections: service.connections
  })
}

/** What reply-from actually passes to `onResponse` (its typings say ServerResponse). */
interface UpstreamResponse { headers: IncomingHttpHeaders, stream: Readable }

// The target a request was sent to, when its service has several: its outcome feeds passive health.
const picked = new WeakMap<object, BalancedTarget<unknown>>()

// undici's refusals of the request itself (a header it cannot send): the client's doing, not the upstream's.
const REQUEST_REFUSED_CODES: ReadonlySet<string> = new Set(['UND_ERR_NOT_SUPPORTED', 'UND_ERR_INVALID_ARG'])

function answerUpstreamFailure (reply: AnyReply, { error }: { error: Error }, answer?: (reply: AnyReply) => void): void {
  const code = classifyUpstreamError(error)
  // A body over the limit, or a request undici refused to send, is never a strike against the upstream.
  const root = rootErrorCode(error)
  const notCounted = code === 'GATEWAY_ERR_BODY_TOO_LARGE' || (root !== undefined && REQUEST_REFUSED_CODES.has(root))
  settle(reply.raw, notCounted ? new NotCountedError(code) : error)
  if (!notCounted) {
    picked.get(reply.request)?.report(false)
    endUpstreamCall(reply.request, { failure: upstreamFailureKind(error) })
  }
  // reply-from already logged the failure (through serializeUpstreamError, so without addresses).
  if (reply.sent) return
  if (answer !== undefined) answer(reply)
  else sendProblem(reply, code, code === 'GATEWAY_ERR_BODY_TOO_LARGE' ? { headers: { connection: 'close' } } : undefined)
}

// reply-from would retry GET on 503 up to 10 times (`maxRetriesOn503: 0` is read as 10) and
// idempotent requests on socket errors: with `retries: 0`, nothing is retried.
function neverRetry (): null {
  return null
}

/** The upstream's headers were fine, its body failed before the first byte reached the client. */
function answerBrokenBody (request: AnyReply['request'], reply: AnyReply, error: Error): void {
  request.log.debug({ code: rootErrorCode(error) }, 'upstream response failed')
  endUpstreamCall(request, { failure: upstreamFailureKind(error) })
  sendProblem(reply, classifyUpstreamError(error))
}

function answerRouteError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (isUpstreamResponseError(error)) {
    answerBrokenBody(request, reply, error)
    return
  }
  // Errors of the host's own hooks (a preHandler answering 403 or 429) go to the host's handler.
  if (!isProxyError(error)) throw error
  const code = error.code === 'GATEWAY_ERR_BODY_TOO_LARGE'
    ? 'GATEWAY_ERR_BODY_TOO_LARGE'
    : (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) ? 'GATEWAY_ERR_BAD_REQUEST' : 'GATEWAY_ERR_INTERNAL'
  if (code === 'GATEWAY_ERR_INTERNAL') request.log.error({ err: error }, 'proxy route failed')
  else request.log.debug({ code: rootErrorCode(error) }, 'request refused')
  sendProblem(reply, code, code === 'GATEWAY_ERR_BODY_TOO_LARGE' ? { headers: { connection: 'close' } } : undefined)
}

/** undici's errors and its HTTP parser's (which may carry no code), raised by the upstream's response stream. */
function isUpstreamResponseError (error: FastifyError): boolean {
  const code = rootErrorCode(error) ?? ''
  if (REQUEST_REFUSED_CODES.has(code)) return false
  return code.startsWith('UND_ERR_') || code.startsWith('HPE_') || error instanceof undiciErrors.HTTPParserError
}

/** Errors this plugin raises itself: the body limit, content-type parsing, reply-from's errors. */
function isProxyError (error: FastifyError): boolean {
  return error.code === 'GATEWAY_ERR_BODY_TOO_LARGE' || error.code?.startsWith('FST_ERR_CTP_') === true ||
    error.code?.startsWith('FST_REPLY_FROM_') === true
}

function registerService (fastify: FastifyInstance, service: ResolvedService, requestIdHeader: string): void {
  const agent = createAgent(service)
  // Headers the gateway sets on the reply; an upstream's copy must not replace them.
  const ownedResponseHeaders: ReadonlySet<string> = new Set([requestIdHeader, 'ratelimit', 'ratelimit-policy'])
  const corsOwned = fastify.hasPlugin('fastify-gateway.cors')
  // The service's breaker, when the breaker plugin is registered (the umbrella registers it first).
  const serviceCircuit = fastify.hasDecorator('gateway') ? fastify.gateway.breaker(service.name) : undefined
  if (service.breakerDeclared && serviceCircuit === undefined) {
    throw new InvalidOptionError(`services.${service.name}.breaker`, 'declared, but no breaker for this service is registered: register the breaker plugin (with this service) before the proxy')
  }
  const { prefix, targets } = service
  // origin, and the path every upstream path starts with (base path of the URL + rewritePrefix)
  const bases = targets.map((target) => ({ origin: target.origin, path: target.basePath + service.rewritePrefix }))
  const balanced = bases.length > 1
  // Several targets: one breaker each, and a target whose breaker is open is skipped.
  const circuits = new Map(bases.map((base, index) => {
    const breaker = balanced && serviceCircuit !== undefined ? fastify.gateway.breaker(service.name, index) : serviceCircuit
    return [base, breaker === undefined ? undefined : circuitOf(breaker)] as const
  }))
  const balancer = createBalancer(bases, balanced ? service.ejection : undefined, (base) => circuits.get(base)?.state !== 'open')
  const pick = balancer.pick
  // Bulkhead: a slow service may hold `maxConcurrent` requests, never every socket of the gateway.
  const { maxConcurrent } = service
  let inFlight = 0
  const release = (): void => { inFlight-- }
  const retry = service.retries === undefined ? undefined : createRetryPolicy(service.retries)
  const { fallback } = service
  /** The fallback's answer; `problem` is what the client gets when the fallback cannot apply. */
  function sendFallback (reply: AnyReply, problem: () => void): void {
    if (fallback === undefined) return problem()
    if (!('upstream' in fallback)) {
      reply.code(fallback.status).headers(fallback.headers).header('x-gateway-fallback', '1').send(fallback.body)
      return
    }
    // A body may already be partly sent upstream and cannot be replayed: such requests get the problem.
    const headers = reply.request.raw.headers
    if ((headers['content-length'] !== undefined && headers['content-length'] !== '0') || headers['transfer-encoding'] !== undefined) return problem()
    const url = reply.request.raw.url as string
    const queryStart = url.indexOf('?')
    const path = (queryStart === -1 ? url : url.slice(0, queryStart)).slice(prefix.length)
    reply.header('x-gateway-fallback', '1')
    picked.delete(reply.request) // the fallback's outcome says nothing about the primary target
    reply.from(fallback.upstream.origin + (fallback.upstream.basePath + service.rewritePrefix + path || '/'), fallbackFromOptions)
  }

  const fromOptions: FastifyReplyFromHooks = {
    rewriteRequestHeaders (request, upstreamHeaders) {
      // reply-from has already removed `Connection` and the headers it names, and set `host`.
      // Copied into a new object rather than deleted from: a request has a handful of headers, and
      // seventeen `delete`s of absent names cost about 4 µs where this copy costs 0.1 µs.
      const incoming = upstreamHeaders as IncomingHttpHeaders
      const dropTraceContext = traceContextInjectedUpstream()
      const headers: IncomingHttpHeaders = {}
      for (const name in incoming) {
        if (!REMOVED_UPSTREAM_REQUEST_HEADERS.has(name) && !(dropTraceContext && TRACE_CONTEXT_HEADERS.has(name))) headers[name] = incoming[name]
      }
      headers['x-forwarded-for'] = request.ip
      headers['x-forwarded-proto'] = request.protocol
      headers['x-forwarded-host'] = request.host
      headers[requestIdHeader] = request.id
      return headers
    },
    rewriteHeaders: () => NO_HEADERS,
    onResponse (_request, reply, response) {
      const res = response as unknown as UpstreamResponse
      // reply-from calls this even after it answered an invalid upstream status itself.
      if (reply.sent) {
        res.stream.destroy()
        return
      }
      copyUpstreamHeaders(res.headers, reply, prefix, bases, ownedResponseHeaders, corsOwned)
      const request = reply.request
      endUpstreamCall(request, { status: reply.statusCode })
      if (balanced) picked.get(request)?.report(reply.statusCode < 500)
      const pending = pendingOutcome(reply.raw)
      if (pending !== undefined) {
        // The outcome is known once the body is through (when the response closes): a reset or stall mid-body is a failure too.
        const status = reply.statusCode
        pending.verdict = (serviceCircuit?.countsAsFailure(status) ?? status >= 500) ? new UpstreamStatusError(`upstream answered ${status}`) : null
      }
      if (!isReadWhole(request.raw.method, reply.statusCode, res.headers)) {
        if (pending !== undefined) {
          const response = reply.raw
          res.stream.once('error', (error: Error) => { settle(response, error) })
        }
        reply.send(res.stream)
        return
      }
      readUpstreamBody(res.stream, (error, body) => {
        // A client that left is not answered, and the breaker did not count its call (breaker-outcomes.ts).
        if (reply.raw.destroyed) return
        if (error === null) {
          reply.send(body)
          return
        }
        settle(reply.raw, error)
        // Nothing was sent yet: a problem replaces the upstream's answer, its headers included.
        removeUpstreamHeaders(res.headers, reply, ownedResponseHeaders, corsOwned)
        answerBrokenBody(request, reply, error)
      })
    },
    onError (reply, failure) {
      // The configured fallback replaces a transport failure's problem (never the 413 of a too-large body).
      if (fallback !== undefined && !reply.sent && classifyUpstreamError(failure.error) !== 'GATEWAY_ERR_BODY_TOO_LARGE') {
        answerUpstreamFailure(reply, failure, (answering) => { sendFallback(answering, () => { answerUpstreamFailure(answering, failure) }) })
        return
      }
      answerUpstreamFailure(reply, failure)
    },
    // Our policy, or none: reply-from's own would retry GET on 503 up to 10 times.
    retryDelay: retry === undefined ? neverRetry : retry.retryDelay as FastifyReplyFromHooks['retryDelay']
  }

  // The fallback upstream: same request rewriting, no retries, and its failure is the final answer.
  const fallbackFromOptions: FastifyReplyFromHooks = {
    ...fromOptions,
    onError: (reply, failure) => { answerUpstreamFailure(reply, failure) },
    retryDelay: neverRetry
  }

  /** reply-from's options for this request: a body read whole (body-limit.ts) is sent as it is. */
  function fromOptionsFor (request: FastifyRequest): FastifyReplyFromHooks {
    const body = request.body
    // With a `contentType`, reply-from sends the buffer unchanged, under the client's own header.
    return Buffer.isBuffer(body) ? { ...fromOptions, body, contentType: request.headers['content-type'] } : fromOptions
  }

  function proxyToUpstream (request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const url = request.raw.url as string
    const queryStart = url.indexOf('?')
    const path = queryStart === -1 ? url : url.slice(0, queryStart)
    // The request guard made the raw path canonical; a router configured to match more loosely
    // (caseSensitive: false) must not send a path the policy did not see.
    if (!path.startsWith(prefix)) return sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST_TARGET')
    const chosen = pick()
    if (balanced) picked.set(request, chosen)
    const base = chosen.value
    const circuit = circuits.get(base)
    // reply-from appends the raw query string itself.
    const target = base.origin + (base.path + path.slice(prefix.length) || '/')
    // reply-from refuses any source containing "/.." (fastify-reply-from#460): answer it here, before
    // the breaker, so a client's request can never count for or against the upstream.
    if (target.includes('/..')) return sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST')
    retry?.onRequest()
    if (maxConcurrent !== Number.POSITIVE_INFINITY) {
      if (inFlight >= maxConcurrent) {
        endUpstreamCall(request, { failure: 'busy' })
        return sendProblem(reply, 'GATEWAY_ERR_SERVICE_BUSY', { headers: { 'retry-after': 1 } })
      }
      inFlight++
      reply.raw.once('close', release)
    }
    if (circuit === undefined) {
      startUpstreamCall(request)
      return reply.from(target, fromOptionsFor(request))
    }
    const ticket = circuit.tryCall()
    if (ticket === REFUSED) {
      endUpstreamCall(request, { failure: 'circuit_open' })
      sendFallback(reply, () => { sendProblem(reply, 'GATEWAY_ERR_CIRCUIT_OPEN', { headers: { 'retry-after': circuit.retryAfterSeconds() } }) })
      return reply
    }
    startUpstreamCall(request)
    forward(request, reply, target, circuit, ticket)
    return reply
  }

  /** One proxied call in the breaker: recorded by reply-from's hooks, or when the response closes. */
  function forward (request: FastifyRequest, reply: FastifyReply, target: string, circuit: Circuit, ticket: CallTicket): void {
    awaitOutcome(reply.raw, circuit, ticket)
    try {
      reply.from(target, fromOptionsFor(request))
    } catch (error) {
      settle(reply.raw, new NotCountedError('GATEWAY_REQUEST_REFUSED'))
      reply.send(error) // through the error handlers, as without a breaker
    }
  }

  fastify.register(async function gatewayService (instance) {
    await instance.register(replyFrom, { undici: agent as never, disableRequestLogging: true })
    instance.removeAllContentTypeParsers()
    instance.addContentTypeParser('*', streamBodyWithin(service.bodyLimit))
    instance.setErrorHandler(answerRouteError)
    const checks = service.healthCheck === undefined ? undefined : startHealthChecks(balancer, agent, service.healthCheck)
    instance.addHook('onClose', async () => {
      if (checks !== undefined) clearInterval(checks)
      // onClose runs once every client connection has ended (drained, or cut at closeGracefully's
      // deadline): an upstream call still running has nobody to answer, and close() would wait for it.
      await agent.destroy()
    })
    const route = {
      method: [...service.methods],
      handler: proxyToUpstream,
      config: { gateway: service.policy },
      logSerializers: { err: serializeUpstreamError }
    }
    instance.route({ ...route, url: prefix === '' ? '/' : prefix })
    instance.route({ ...route, url: `${prefix}/*` })
  })
}

const proxyPlugin: FastifyPluginAsync<ProxyOptions> = async function proxy (fastify, input) {
  const { services, requestIdHeader } = normalizeProxyOptions(input)
  declareRequestFacts(fastify)
  for (const service of services) registerService(fastify, service, requestIdHeader)
}

/**
 * Proxies each service's prefix to its upstream(s), with TLS verified, bounded timeouts, errors
 * mapped to problem+json (502/504/413), hop-by-hop and forwarding headers rewritten, and bodies
 * streamed within a size limit.
 *
 * @example
 * ```ts
 * await app.register(proxy, {
 *   services: { users: { upstream: 'http://users:8001', prefix: '/api/v1/users', timeout: '10s' } }
 * })
 * ```
 */
export const proxy = fp(proxyPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.proxy',
  dependencies: ['fastify-gateway.correlation-id', 'fastify-gateway.request-guard']
})
