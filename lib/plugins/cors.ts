/**
 * cors: the gateway's CORS policy, on @fastify/cors. An exact origin allowlist; preflight answered
 * in an `onRequest` hook, before auth and without reaching an upstream; a foreign origin gets no
 * `Access-Control-*` header at all, whoever set it; `Vary: Origin` on every response.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import fastifyCors, { type FastifyCorsOptions } from '@fastify/cors'
import fp from 'fastify-plugin'
import { InvalidOptionError } from '../errors.js'
import { toMilliseconds, type Duration } from '../internal/duration.js'
import { headerName, optionalObject, rejectUnknownKeys, stringList } from '../internal/options.js'

/**
 * Options of the {@link cors} plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, cors: { origins: ['https://app.example.com'], credentials: true } })
 * ```
 */
export interface CorsOptions {
  /**
   * Origins allowed to call the gateway from a browser: exact origins (`'https://app.example.com'`,
   * no path, no trailing slash), `'null'`, anchored RegExps (`/^https:\/\/[a-z0-9-]+\.example\.com$/`),
   * or `'*'` alone (any origin, never with `credentials`).
   */
  origins: ReadonlyArray<string | RegExp>
  /** Send `Access-Control-Allow-Credentials: true` (cookies, `Authorization`). Default `false`. */
  credentials?: boolean
  /** Methods a preflight allows. Default GET, HEAD, POST, PUT, PATCH, DELETE. */
  methods?: readonly string[]
  /** Request headers a preflight allows. Default: those the preflight asks for. */
  allowedHeaders?: readonly string[]
  /** Response headers the browser may read beyond the safelisted ones. Default none. */
  exposedHeaders?: readonly string[]
  /** How long a browser may cache a preflight answer; sent in whole seconds. Default 600 s. */
  maxAge?: Duration
}

const DEFAULTS = {
  credentials: false,
  methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
  maxAge: 600_000
} as const

const METHOD_TOKEN = /^[!#$%&'*+.^`|~0-9A-Za-z-]+$/
const VARY_HAS_ORIGIN = /(?:^|,)\s*(?:origin|\*)\s*(?:,|$)/i

interface NormalizedCorsOptions {
  anyOrigin: boolean
  exactOrigins: readonly string[]
  originPatterns: readonly RegExp[]
  credentials: boolean
  methods: readonly string[]
  allowedHeaders: readonly string[] | undefined
  exposedHeaders: readonly string[]
  maxAgeSeconds: number
}

function isSerializedOrigin (value: string): boolean {
  try {
    return new URL(value).origin === value
  } catch {
    return false
  }
}

function originPattern (pattern: RegExp, path: string): RegExp {
  // Unanchored, /example\.com/ also matches https://example.com.evil.net.
  if (!pattern.source.startsWith('^') || !pattern.source.endsWith('$')) {
    throw new InvalidOptionError(path, 'a RegExp origin must be anchored with ^ and $')
  }
  // Anchored again around the whole source, so that a top-level alternation (/^https:\/\/a\.com|b\.com$/)
  // cannot leave a branch open; g and y dropped because they make test() stateful. A copy: the
  // caller's RegExp is never touched.
  return new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace(/[gy]/g, ''))
}

function headerNames (value: unknown, path: string, { nonEmpty }: { nonEmpty: boolean }): string[] {
  const names = stringList(value, path)
  if (nonEmpty && names.length === 0) throw new InvalidOptionError(path, 'expected at least one header name')
  return names.map((name, i) => headerName(name, `${path}[${i}]`))
}

function normalizeCorsOptions (input: unknown): Readonly<NormalizedCorsOptions> {
  const options = optionalObject(input, 'cors')
  rejectUnknownKeys(options, ['origins', 'credentials', 'methods', 'allowedHeaders', 'exposedHeaders', 'maxAge'], 'cors')

  const credentials = options.credentials ?? DEFAULTS.credentials
  if (typeof credentials !== 'boolean') throw new InvalidOptionError('cors.credentials', 'expected a boolean')

  const origins = options.origins
  if (!Array.isArray(origins) || origins.length === 0) throw new InvalidOptionError('cors.origins', 'expected a non-empty array')
  const exactOrigins: string[] = []
  const originPatterns: RegExp[] = []
  let anyOrigin = false
  for (const [i, origin] of origins.entries()) {
    const path = `cors.origins[${i}]`
    if (origin === '*') {
      if (origins.length > 1) throw new InvalidOptionError('cors.origins', '"*" cannot be combined with other origins')
      if (credentials) throw new InvalidOptionError('cors.credentials', 'cannot be true with origins ["*"]')
      anyOrigin = true
    } else if (origin instanceof RegExp) {
      originPatterns.push(originPattern(origin, path))
    } else if (typeof origin === 'string' && (origin === 'null' || isSerializedOrigin(origin))) {
      exactOrigins.push(origin)
    } else {
      throw new InvalidOptionError(path, 'expected "*", "null", an anchored RegExp or an origin like "https://app.example.com" (no path, no trailing slash, no default port)')
    }
  }

  const methods = stringList(options.methods, 'cors.methods', DEFAULTS.methods)
  if (methods.length === 0) throw new InvalidOptionError('cors.methods', 'expected at least one method')
  for (const [i, method] of methods.entries()) {
    if (!METHOD_TOKEN.test(method)) throw new InvalidOptionError(`cors.methods[${i}]`, 'expected an HTTP method')
  }

  const maxAge = toMilliseconds(options.maxAge ?? DEFAULTS.maxAge, 'cors.maxAge', { allowZero: true })
  // A bare 600 is 600 ms here, not @fastify/cors's 600 s: refuse it rather than send max-age 0.
  if (maxAge % 1000 !== 0) throw new InvalidOptionError('cors.maxAge', 'expected whole seconds, e.g. "10m" or 600000')

  return Object.freeze({
    anyOrigin,
    exactOrigins: Object.freeze(exactOrigins),
    originPatterns: Object.freeze(originPatterns),
    credentials,
    methods: Object.freeze(methods),
    allowedHeaders: options.allowedHeaders === undefined
      ? undefined
      : Object.freeze(headerNames(options.allowedHeaders, 'cors.allowedHeaders', { nonEmpty: true })),
    exposedHeaders: Object.freeze(headerNames(options.exposedHeaders, 'cors.exposedHeaders', { nonEmpty: false })),
    maxAgeSeconds: maxAge / 1000
  })
}

function compileOriginCheck ({ anyOrigin, exactOrigins, originPatterns }: NormalizedCorsOptions): (origin: string) => boolean {
  if (anyOrigin) return () => true
  const exact = new Set(exactOrigins)
  return function isAllowedOrigin (origin) {
    if (exact.has(origin)) return true
    for (let i = 0; i < originPatterns.length; i++) if (originPatterns[i].test(origin)) return true
    return false
  }
}

/** Adds `Origin` to `Vary` unless present (or `*`): a handler or an upstream may have replaced ours. */
function varyOnOrigin (reply: FastifyReply): void {
  const vary = reply.getHeader('vary')
  if (vary === undefined) {
    reply.header('vary', 'Origin')
    return
  }
  const value = Array.isArray(vary) ? vary.join(', ') : String(vary)
  if (!VARY_HAS_ORIGIN.test(value)) reply.header('vary', `${value}, Origin`)
}

function removeCorsHeaders (reply: FastifyReply): void {
  for (const name of Object.keys(reply.getHeaders())) {
    if (name.startsWith('access-control-')) reply.removeHeader(name)
  }
}

const corsPlugin: FastifyPluginAsync<CorsOptions> = async function cors (fastify, input) {
  const options = normalizeCorsOptions(input)
  const isAllowedOrigin = compileOriginCheck(options)

  const allowedActual: FastifyCorsOptions = Object.freeze({
    origin: options.anyOrigin ? '*' : true, // true: echo the request's Origin, already checked here
    credentials: options.credentials,
    methods: options.methods.join(', '),
    // @fastify/cors tests `!== null`: an absent option must be left out, not set to undefined.
    ...(options.allowedHeaders === undefined ? {} : { allowedHeaders: options.allowedHeaders.join(', ') }),
    ...(options.exposedHeaders.length === 0 ? {} : { exposedHeaders: options.exposedHeaders.join(', ') }),
    maxAge: options.maxAgeSeconds,
    preflight: false
  })
  const allowedPreflight: FastifyCorsOptions = Object.freeze({ ...allowedActual, preflight: true, strictPreflight: true })
  // A foreign origin's preflight is still answered in the hook (204, as @fastify/cors does), so it
  // never reaches auth or an upstream; an empty allowlist sends no Allow-Origin, and
  // keepCorsDecision removes the other headers @fastify/cors adds to a preflight answer regardless.
  const foreignPreflight: FastifyCorsOptions = Object.freeze({ origin: [], preflight: true, strictPreflight: true })
  const notCors: FastifyCorsOptions = Object.freeze({ origin: false })

  // Per request through @fastify/cors's delegator, not its static options: the static form sends
  // Allow-Credentials and Expose-Headers (and Allow-Methods/-Headers/Max-Age on preflight) to
  // origins it refuses, and with strictPreflight answers 400 to every OPTIONS without
  // Access-Control-Request-Method. Only OPTIONS + Origin + that header is a preflight
  // (https://fetch.spec.whatwg.org/#cors-preflight-request); any other OPTIONS is an ordinary
  // request and goes on to auth like the rest.
  function corsOptionsFor (request: FastifyRequest, callback: (error: Error | null, options: FastifyCorsOptions) => void): void {
    const origin = request.headers.origin
    if (origin === undefined) return callback(null, notCors)
    const isPreflight = request.raw.method === 'OPTIONS' && Boolean(request.headers['access-control-request-method'])
    if (isAllowedOrigin(origin)) return callback(null, isPreflight ? allowedPreflight : allowedActual)
    callback(null, isPreflight ? foreignPreflight : notCors)
  }

  // The preflight answer must come from a hook, not a route: a browser sends preflights without
  // credentials, so auth (a later onRequest hook) would refuse them. Same reasoning as
  // https://github.com/fastify/fastify-cors/blob/main/index.js ("The preflight reply must occur in
  // the hook"); CORS protocol: https://fetch.spec.whatwg.org/#http-cors-protocol
  await fastify.register(fastifyCors, { hook: 'onRequest', delegator: corsOptionsFor })

  // Last word on every response: a handler or an upstream (reply-from copies its headers over ours)
  // may have replaced Vary or added its own Access-Control-* headers for an origin we refuse.
  fastify.addHook('onSend', function keepCorsDecision (request, reply, payload, done) {
    varyOnOrigin(reply)
    const origin = request.headers.origin
    if (origin !== undefined && !isAllowedOrigin(origin)) removeCorsHeaders(reply)
    done(null, payload)
  })
}

/**
 * CORS for the gateway: answers preflights from allowed origins before auth, echoes an allowed
 * `Origin`, and gives any other origin no `Access-Control-*` header at all. Register it after
 * `requestGuard` and before auth (the {@link gateway} umbrella does).
 *
 * @example
 * ```ts
 * await app.register(cors, {
 *   origins: ['https://app.example.com', /^https:\/\/[a-z0-9-]+\.preview\.example\.com$/],
 *   credentials: true,
 *   exposedHeaders: ['x-request-id'],
 *   maxAge: '10m'
 * })
 * ```
 */
export const cors = fp(corsPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.cors',
  dependencies: ['fastify-gateway.correlation-id', 'fastify-gateway.request-guard']
})
