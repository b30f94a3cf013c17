/**
 * auth: every route needs a credential unless it is public. Runs as an instance-level onRequest
 * hook (after the request guard and CORS), so routes registered before the gateway, in child
 * contexts or by other plugins (`/metrics`, `/docs`) are protected like the rest; unknown paths
 * stay 404. Each route's policy is resolved once — in onRoute, or on its first request for routes
 * that existed before this plugin — never re-read from options per request.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { createApiKeyVerifier, KeyLookupUnavailableError } from '../internal/api-keys.js'
import { assertRoutePolicyShape, identityHeaderNames, resolveAuthOptions, type PublicRoutePattern, type ResolvedAuthOptions } from '../internal/auth-options.js'
import { removeRequestHeaders, separatorSpellings } from '../internal/headers.js'
import { createTokenVerifier, KeysUnavailableError, TokenRejectedError } from '../internal/jwt.js'
import { declareRequestFacts, factsOf, type AuthFailureReason, routeConfigOf } from '../internal/request-facts.js'
import type { AuthOptions, Consumer, GatewayRoutePolicy } from '../types.js'

/** What a route requires, per method. `invalid`: a route registered before the gateway with a bad `config.gateway` (fails closed). */
interface AuthPolicy {
  readonly mode: 'public' | 'required' | 'optional' | 'invalid'
  readonly scopes: readonly string[]
}
const INVALID_POLICY: AuthPolicy = Object.freeze({ mode: 'invalid', scopes: Object.freeze([]) })
type RoutePolicies = Readonly<Record<string, AuthPolicy>>

const kAuthPolicies = Symbol('fastify-gateway.auth-policies')
const ANONYMOUS: Consumer = Object.freeze({ id: 'anonymous', kind: 'anonymous', scopes: Object.freeze([]), claims: Object.freeze({}) })
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i
const HEADER_VALUE = /^[\x20-\x7e]{0,1024}$/

function matchesPublic (patterns: readonly PublicRoutePattern[], method: string, url: string): boolean {
  return patterns.some((pattern) =>
    (pattern.methods === undefined || pattern.methods.has(method)) &&
    (pattern.below ? url.startsWith(`${pattern.path}/`) : url === pattern.path))
}

/** Validates `config.gateway`'s auth fields; throws GATEWAY_ERR_INVALID_OPTION naming the route. */
function resolveRoutePolicies (patterns: readonly PublicRoutePattern[], methods: string | string[], url: string, gateway: GatewayRoutePolicy | undefined): RoutePolicies {
  const where = `config.gateway of ${url}`
  assertRoutePolicyShape(gateway, url)
  if (gateway?.public !== undefined && typeof gateway.public !== 'boolean') throw new InvalidOptionError(`${where}.public`, 'expected a boolean')
  if (gateway?.auth !== undefined && gateway.auth !== 'required' && gateway.auth !== 'optional') throw new InvalidOptionError(`${where}.auth`, 'expected "required" or "optional"')
  const scopes = gateway?.scopes ?? []
  if (!Array.isArray(scopes) || !scopes.every((scope) => typeof scope === 'string' && scope.length > 0)) throw new InvalidOptionError(`${where}.scopes`, 'expected an array of scope strings')
  const policies: Record<string, AuthPolicy> = {}
  for (const method of Array.isArray(methods) ? methods : [methods]) {
    const mode = gateway?.public === true || matchesPublic(patterns, method, url) ? 'public' : gateway?.auth ?? 'required'
    policies[method] = Object.freeze({ mode, scopes: Object.freeze([...scopes]) })
  }
  return Object.freeze(policies)
}

/** The bounded reason recorded for metrics; the detailed one goes to the debug log only. */
function tokenFailure (error: unknown): AuthFailureReason {
  return error instanceof TokenRejectedError && error.reason === 'FAST_JWT_EXPIRED' ? 'expired' : 'invalid_token'
}

function challenge (options: ResolvedAuthOptions, error: 'invalid_token' | 'insufficient_scope' | undefined): string {
  const challenges: string[] = []
  if (options.jwt !== undefined) challenges.push(`Bearer realm="${options.realm}"${error === undefined ? '' : `, error="${error}"`}`)
  if (options.apiKeys !== undefined && error !== 'insufficient_scope') challenges.push(`ApiKey realm="${options.realm}", header="${options.apiKeys.header}"`)
  return challenges.join(', ')
}

const authPlugin: FastifyPluginAsync<AuthOptions> = async function auth (fastify, input) {
  const options = resolveAuthOptions(input)
  declareRequestFacts(fastify)
  const verifyToken = options.jwt === undefined ? undefined : createTokenVerifier(options.jwt, fastify.log)
  const verifyApiKey = options.apiKeys === undefined ? undefined : createApiKeyVerifier(options.apiKeys)
  const { id: idHeader, scopes: scopesHeader, claims: claimHeaders } = options.identityHeaders
  const apiKeyHeader = options.apiKeys?.header
  // Every spelling of the key header (`x_api_key` is the same header to CGI-style upstreams).
  const apiKeyHeaders = apiKeyHeader === undefined ? [] : separatorSpellings(apiKeyHeader) ?? [apiKeyHeader]
  const apiKeyQuery = options.apiKeys?.query
  const challenges = {
    missing: challenge(options, undefined),
    invalid: challenge(options, 'invalid_token'),
    invalidKey: options.apiKeys === undefined ? '' : `ApiKey realm="${options.realm}", header="${options.apiKeys.header}"`,
    scope: challenge(options, 'insufficient_scope')
  }
  const lazilyResolved = new WeakMap<object, RoutePolicies>()
  // Every spelling of every header auth sets: removed from every request, public routes included,
  // so a hand-composed gateway without the umbrella's guard configuration cannot be spoofed either.
  const ownHeaders = identityHeaderNames(options).flatMap((name) => separatorSpellings(name) ?? [name])
  // What one walk over a request's headers removes (a `delete` of an absent name costs ~0.25 µs,
  // and there are a dozen names): auth's own headers, and unless credentials are forwarded, the
  // client's credential headers, once they have been read.
  const removedHeaders: ReadonlySet<string> = new Set([...ownHeaders, ...(options.forwardCredentials ? [] : ['authorization', ...apiKeyHeaders])])
  const publicRoutes: string[] = []

  fastify.decorateRequest('consumer', null)

  fastify.addHook('onRoute', function resolveAuthPolicy (route: RouteOptions) {
    const policies = resolveRoutePolicies(options.publicRoutes, route.method, route.url, route.config?.gateway)
    for (const [method, policy] of Object.entries(policies)) if (policy.mode === 'public') publicRoutes.push(`${method} ${route.url}`)
    // A new config object (the caller's is never mutated); Fastify copies it into the route context.
    route.config = { ...route.config, [kAuthPolicies]: policies } as typeof route.config
  })

  fastify.addHook('onReady', function logPublicRoutes (done) {
    fastify.log.info({ publicRoutes }, 'gateway: routes reachable without a credential')
    done()
  })

  function policyOf (request: FastifyRequest): AuthPolicy | undefined {
    const config = routeConfigOf(request)
    if (config.url === undefined) return undefined // 404: unknown paths stay 404
    let policies = config[kAuthPolicies] as RoutePolicies | undefined
    if (policies === undefined) {
      // A route registered before this plugin: resolved once, on its first request.
      policies = lazilyResolved.get(config)
      if (policies === undefined) {
        try {
          policies = resolveRoutePolicies(options.publicRoutes, config.method ?? request.method, config.url, config.gateway)
        } catch (error) {
          // Registered before the gateway, so it could not fail at boot: refuse every request, loudly.
          fastify.log.error({ err: error, route: config.url }, 'invalid config.gateway on a route registered before the gateway; the route is refused')
          policies = Object.freeze({ [request.method]: INVALID_POLICY })
        }
        lazilyResolved.set(config, policies)
      }
    }
    return policies[request.method] ?? INVALID_POLICY
  }

  function refuse (request: FastifyRequest, reply: FastifyReply, failure: AuthFailureReason, reason: string, challengeValue: string): void {
    request.log.debug({ reason }, 'credential refused')
    factsOf(request).authFailure = failure
    sendProblem(reply, 'GATEWAY_ERR_UNAUTHENTICATED', { headers: { 'www-authenticate': challengeValue } })
  }

  function admit (request: FastifyRequest, reply: FastifyReply, policy: AuthPolicy, consumer: Consumer, done: () => void): void {
    for (const scope of policy.scopes) {
      if (!consumer.scopes.includes(scope)) {
        request.log.debug({ consumer: consumer.id, scope }, 'scope missing')
        factsOf(request).authFailure = 'insufficient_scope'
        sendProblem(reply, 'GATEWAY_ERR_FORBIDDEN', consumer.kind === 'jwt' ? { headers: { 'www-authenticate': challenges.scope } } : undefined)
        return
      }
    }
    request.consumer = consumer
    if (consumer.kind !== 'anonymous') {
      const headers = request.raw.headers
      headers[idHeader] = consumer.id
      headers[scopesHeader] = consumer.scopes.join(' ')
      for (const [claim, header] of claimHeaders) {
        const value = consumer.claims[claim]
        // Only values a header can carry verbatim; anything else (objects, CR/LF) is not sent.
        if ((typeof value === 'string' && HEADER_VALUE.test(value)) || typeof value === 'number' || typeof value === 'boolean') headers[header] = String(value)
      }
    }
    done()
  }

  function settle (request: FastifyRequest, reply: FastifyReply, policy: AuthPolicy, done: () => void, result: Consumer | null | Promise<Consumer | null>, kind: 'token' | 'key'): void {
    const onConsumer = (consumer: Consumer | null): void => {
      if (consumer === null) refuse(request, reply, 'invalid_key', 'unknown API key', challenges.invalidKey)
      else admit(request, reply, policy, consumer, done)
    }
    const onError = (error: unknown): void => {
      if (error instanceof KeysUnavailableError || error instanceof KeyLookupUnavailableError) {
        request.log.debug({ kind }, 'credential could not be checked')
        factsOf(request).authFailure = 'unavailable'
        sendProblem(reply, 'GATEWAY_ERR_AUTH_UNAVAILABLE')
      } else {
        const reason = error instanceof TokenRejectedError ? error.reason : (error as { code?: string }).code ?? 'invalid'
        if (kind === 'key') refuse(request, reply, 'invalid_key', reason, challenges.invalidKey)
        else refuse(request, reply, tokenFailure(error), reason, challenges.invalid)
      }
    }
    if (result instanceof Promise) result.then(onConsumer, onError)
    else onConsumer(result)
  }

  fastify.addHook('onRequest', function authenticate (request, reply, done) {
    const policy = policyOf(request)
    if (policy === undefined) {
      done()
      return
    }
    const headers = request.raw.headers
    if (policy.mode === 'public') {
      // Unverified, so never forwarded: an upstream must not mistake it for a checked credential.
      removeRequestHeaders(request.raw, removedHeaders)
      if (!options.forwardCredentials && apiKeyQuery !== undefined) takeQueryParameter(request, apiKeyQuery)
      done()
      return
    }
    if (policy.mode === 'invalid') {
      removeRequestHeaders(request.raw, removedHeaders)
      sendProblem(reply, 'GATEWAY_ERR_INTERNAL')
      return
    }

    const authorization = headers.authorization
    // A token verified before, in the usual spelling `Bearer <token>`, is found without the syntax
    // check (it passed it when it was verified): that scan of an RS256 token cost ~0.9 µs.
    const known = typeof authorization === 'string' && authorization.startsWith('Bearer ') ? verifyToken?.cached(authorization.slice(7)) : undefined
    const bearer = known === undefined && typeof authorization === 'string' ? BEARER.exec(authorization)?.[1] : undefined
    let key = apiKeyHeader === undefined ? undefined : headers[apiKeyHeader]
    // The configured query parameter is always taken out of the URL, used or not.
    const queryKey = apiKeyQuery === undefined ? undefined : takeQueryParameter(request, apiKeyQuery)
    key ??= queryKey
    // Read, so now removed: auth's own headers, and (unless forwarded) any Authorization, Bearer or
    // not, and every API-key spelling: the client's credential, which the upstream never sees.
    removeRequestHeaders(request.raw, removedHeaders)

    if (known !== undefined) {
      admit(request, reply, policy, known, done)
    } else if (bearer !== undefined && verifyToken !== undefined) {
      let result
      try {
        result = verifyToken.verify(bearer)
      } catch (error) {
        refuse(request, reply, tokenFailure(error), error instanceof TokenRejectedError ? error.reason : 'invalid', challenges.invalid)
        return
      }
      settle(request, reply, policy, done, result, 'token')
    } else if (key !== undefined && verifyApiKey !== undefined) {
      if (typeof key !== 'string') {
        refuse(request, reply, 'invalid_key', 'several API keys', challenges.invalidKey)
        return
      }
      settle(request, reply, policy, done, verifyApiKey(key), 'key')
    } else if (policy.mode === 'optional' && authorization === undefined) {
      // Anonymous means no credential at all: a malformed Authorization is still a failed one.
      admit(request, reply, policy, ANONYMOUS, done)
    } else {
      refuse(request, reply, 'missing', 'no credential', challenges.missing)
    }
  })
}

function safeDecode (value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}

/** Reads and removes an API-key query parameter from the raw URL, so it is never forwarded. */
function takeQueryParameter (request: FastifyRequest, name: string): string | undefined {
  const url = request.raw.url as string
  const queryStart = url.indexOf('?')
  if (queryStart === -1) return undefined
  let value: string | undefined
  const kept = url.slice(queryStart + 1).split('&').filter((pair) => {
    const equals = pair.indexOf('=')
    const key = equals === -1 ? pair : pair.slice(0, equals)
    const raw = equals === -1 ? '' : pair.slice(equals + 1)
    if (key !== name) return true
    value ??= safeDecode(raw.replace(/\+/g, ' '))
    return false
  })
  request.raw.url = kept.length === 0 ? url.slice(0, queryStart) : `${url.slice(0, queryStart)}?${kept.join('&')}`
  return value
}

/**
 * Protects every route unless it is public: Bearer JWTs (HMAC secret or JWKS issuers, algorithms
 * pinned per key source) and API keys; scopes → 403; the verified identity sent upstream.
 *
 * @example
 * ```ts
 * await app.register(auth, {
 *   jwt: { issuer: 'https://id.example.com/', audience: 'orders-api' },
 *   apiKeys: { lookup: async (key) => findConsumerByKey(key) },
 *   public: ['GET /health', '/docs/*']
 * })
 * app.get('/api/v1/me', { config: { gateway: { scopes: ['profile:read'] } } }, async (req) => req.consumer)
 * ```
 */
export const auth = fp(authPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.auth',
  dependencies: ['fastify-gateway.correlation-id', 'fastify-gateway.request-guard']
})
