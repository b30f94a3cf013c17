/** Public types shared by the plugins, and the `config.gateway` route option. */
import type { HTTPMethods } from 'fastify'
import type { Duration } from './internal/duration.js'

export type { Duration }

/**
 * Upstream timeouts. One duration applies to both `headers` and `body`.
 *
 * @example
 * ```ts
 * services: { reports: { upstream: 'http://reports:8004', prefix: '/api/v1/reports', timeout: { connect: '2s', headers: '20s', body: '1m' } } }
 * ```
 */
export interface GatewayTimeouts {
  /** TCP (and TLS) connect. Default 5 s. */
  connect?: Duration
  /** From the request being sent to the response headers. Default 30 s. */
  headers?: Duration
  /** Between two chunks of the response body. Default 30 s. */
  body?: Duration
}

/**
 * One upstream service: the routes under `prefix` are proxied to `upstream`.
 *
 * @example
 * ```ts
 * const users: GatewayServiceOptions = {
 *   upstream: ['http://users-1:8001', 'http://users-2:8001'],
 *   prefix: '/api/v1/users',
 *   timeout: '10s',
 *   rateLimit: { max: 1000, window: '1m' },
 *   breaker: { errorThresholdPercentage: 50, resetTimeout: '30s' },
 *   fallback: { status: 200, body: { users: [], degraded: true } }
 * }
 * ```
 */
export interface GatewayServiceOptions {
  /** Base URL of the upstream (`http:` or `https:`), or several, used round-robin. */
  upstream: string | readonly string[]
  /** Path prefix the service answers under, e.g. `/api/v1/users`. */
  prefix: string
  /** Replaces `prefix` in the path sent upstream. Default `''`: the prefix is removed. */
  rewritePrefix?: string
  /** Methods proxied. Default GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS. CONNECT and TRACE never. */
  methods?: readonly HTTPMethods[]
  /** Upstream timeouts: one duration for headers and body, or each (defaults 5 s / 30 s / 30 s). */
  timeout?: Duration | GatewayTimeouts
  /** Largest request body forwarded, in bytes; larger → 413. Default 1 MiB. */
  bodyLimit?: number
  /** CA certificates (PEM) for `https:` upstreams; they replace Node's default roots. Certificates are always verified. */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>
  /** Keep-alive connections per upstream target. Default 128. */
  connections?: number
  /**
   * Passive health over several upstreams: a target failing `failures` times in a row (default 3) is
   * skipped for `baseTime` (default 5 s), doubling per ejection up to `maxTime` (default 1 min). `false` to disable.
   */
  ejection?: { failures?: number, baseTime?: Duration, maxTime?: Duration } | false
  /**
   * Used instead of the gateway's 502/503/504 problem when the breaker is open or the upstream cannot
   * be reached or times out (never for the upstream's own answers, never for 4xx): a static answer,
   * or another upstream (for requests without a body; same path, timeouts and CA as the service).
   */
  fallback?: { status: number, body?: string | object, headers?: Record<string, string>, upstream?: never } | { upstream: string, status?: never, body?: never, headers?: never }
  /** Active health checks: GET `path` on every target each `interval`; a non-2xx or a failure takes the target out until a check passes. */
  healthCheck?: { path: string, interval: Duration, timeout?: Duration }
  /** Bulkhead: requests in flight to the service at most; more are refused at once with 503. Default: no cap. */
  maxConcurrent?: number
  /**
   * Retries of GET/HEAD/OPTIONS without a body, on connection errors and on `statuses` (default 502,
   * 503), within a budget (default 20 % of the service's requests). A number is `attempts`. Default 1; 0 for none.
   */
  retries?: number | { attempts?: number, statuses?: readonly number[], budget?: number }
  /** Reachable without a credential (see {@link GatewayRoutePolicy.public}). */
  public?: boolean
  /** `'optional'` accepts anonymous callers (see {@link GatewayRoutePolicy.auth}). */
  auth?: 'required' | 'optional'
  /** Scopes every route of the service requires. */
  scopes?: readonly string[]
  /** A limit for the service's routes (see {@link RateLimitPolicy}); `false` exempts them from every limit. */
  rateLimit?: RateLimitPolicy | false
  /** The service's circuit breaker (defaults: 50 %, 30 s, volume 10, 10 s window); `false` for none. */
  breaker?: import('./plugins/breaker.js').BreakerPolicy | false
}

/**
 * Per-route gateway policy, declared next to the route in `config.gateway`.
 *
 * @example
 * ```ts
 * app.get('/api/v1/me', { config: { gateway: { scopes: ['profile:read'] } } }, async (request) => request.consumer)
 * app.get('/api/v1/status', { config: { gateway: { public: true, rateLimit: false } } }, async () => ({ ok: true }))
 * ```
 */
export interface GatewayRoutePolicy {
  /** Reachable without a credential: no auth, `request.consumer` stays null. */
  public?: boolean
  /** `'optional'`: a valid credential identifies the caller, none makes it `anonymous`; an invalid one is still 401. */
  auth?: 'required' | 'optional'
  /** Scopes the consumer must all hold (→ 403 otherwise). */
  scopes?: readonly string[]
  /** The service a proxied route belongs to (set by the proxy plugin on the routes it creates). */
  service?: string
  /** A limit of this route on top of the consumer's and the service's; `false` exempts the route from every limit. */
  rateLimit?: RateLimitPolicy | false
}

/**
 * One rate limit: at most `max` requests per `window` (fixed window from a key's first hit).
 *
 * @example
 * ```ts
 * const perPlan: RateLimitPolicy = { max: (consumer) => consumer?.claims.plan === 'gold' ? 1000 : 100, window: '1m' }
 * ```
 */
export interface RateLimitPolicy {
  /** Requests per window; a function gives plan tiers (called with the verified consumer, null when anonymous). */
  max: number | ((consumer: Consumer | null) => number)
  window: Duration
  /** `'consumer'` (default): a bucket per consumer, or per client IP when anonymous; `'all'`: one bucket for every caller. */
  by?: 'consumer' | 'all'
  /** Count and report what would be blocked (log), but never block: how a new limit is rolled out. */
  dryRun?: boolean
}

/**
 * The subset of an ioredis client (`Redis` or `Cluster`) the rate-limit store uses.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis'
 * const store: RateLimitRedisClient = new Redis(process.env.REDIS_URL, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
 * ```
 */
export interface RateLimitRedisClient {
  defineCommand: (name: string, definition: { numberOfKeys?: number, lua: string }) => void
  /** Used by the health plugin's readiness check to find out whether the store is back. */
  ping?: () => Promise<unknown>
}

/**
 * Options of the rate-limit plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, {
 *   auth,
 *   rateLimit: { store: redis, perConsumer: { max: 100, window: '1m' }, onStoreError: 'local', storeTimeout: '100ms' }
 * })
 * ```
 */
export interface RateLimitOptions {
  /**
   * Shared counters: an ioredis `Redis` or `Cluster` created by you (never closed by the gateway),
   * ideally with `enableOfflineQueue: false`, `commandTimeout` ≈ 100 ms, `maxRetriesPerRequest: 1`.
   * Counters live in this process's memory when absent.
   */
  store?: RateLimitRedisClient
  /** One limit across all routes per consumer (per client IP when anonymous). */
  perConsumer?: RateLimitPolicy
  /** When the store fails or is slower than `storeTimeout`: `'open'` lets through, `'closed'` answers 503, `'local'` (default) counts in memory. */
  onStoreError?: 'open' | 'closed' | 'local'
  /** Longest wait for the store before the failure policy applies. Default 100 ms. */
  storeTimeout?: Duration
  /** After a store failure, requests skip the store for this long before it is tried again. Default 1 s. */
  storeRetryInterval?: Duration
  /** Counters kept in memory per limit (memory store, and the local fallback); the least recently used is evicted. Default 10,000. */
  memoryKeys?: number
  /** Also send `X-RateLimit-Limit/Remaining/Reset` of the most constrained limit. Default false. */
  legacyHeaders?: boolean
  /** Prefix of the Redis keys. Default `gateway-rl:`. */
  keyPrefix?: string
}

/**
 * Claims of a consumer: the verified JWT payload, or what an API-key lookup returned. Extend it to
 * type your own claims:
 *
 * @example
 * ```ts
 * declare module 'fastify-gateway' {
 *   interface ConsumerClaims { tenant?: string }
 * }
 * ```
 */
export interface ConsumerClaims {
  [claim: string]: unknown
}

/**
 * The verified caller of a request (`request.consumer`).
 *
 * @example
 * ```ts
 * app.get('/api/v1/me', async (request) => {
 *   const consumer: Consumer | null = request.consumer
 *   return { id: consumer?.id, kind: consumer?.kind, scopes: consumer?.scopes }
 * })
 * ```
 */
export interface Consumer {
  /** JWT `sub`, or the API key's consumer id. */
  readonly id: string
  readonly kind: 'jwt' | 'api-key' | 'anonymous'
  readonly scopes: readonly string[]
  readonly claims: Readonly<ConsumerClaims>
}

/**
 * What an API key maps to: in `auth.apiKeys.keys` or returned by `auth.apiKeys.lookup`.
 *
 * @example
 * ```ts
 * const lookup = async (key: string): Promise<ApiKeyConsumer | null> =>
 *   key === process.env.PARTNER_KEY ? { id: 'partner-1', scopes: ['orders:read'], claims: { plan: 'gold' } } : null
 * ```
 */
export interface ApiKeyConsumer {
  id: string
  scopes?: readonly string[]
  claims?: ConsumerClaims
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** fastify-gateway policy for this route. */
    gateway?: GatewayRoutePolicy
  }
  interface FastifyRequest {
    /** The verified caller, set by the auth plugin; null on public routes and before auth. */
    consumer: Consumer | null
  }
}

/**
 * Signature algorithms a JWKS issuer may be pinned to (never `none`, never HMAC).
 *
 * @example
 * ```ts
 * const issuer = { issuer: 'https://id.example.com/', algorithms: ['ES256'] as AsymmetricAlgorithm[] }
 * ```
 */
export type AsymmetricAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512' | 'ES256' | 'ES384' | 'ES512' | 'EdDSA'

/**
 * One issuer whose keys come from its JWKS.
 *
 * @example
 * ```ts
 * const partners: JwksIssuerOptions = { issuer: 'https://login.partner.example/', audience: 'orders-api', algorithms: ['RS256', 'PS256'] }
 * ```
 */
export interface JwksIssuerOptions {
  /** The exact `iss` value; also where discovery looks (`/.well-known/openid-configuration`). */
  issuer: string
  /** JWKS URL; discovered from the issuer when absent. */
  jwksUri?: string
  /** Algorithms accepted for this issuer. Default `['RS256']`. */
  algorithms?: readonly AsymmetricAlgorithm[]
  /** Audience for this issuer's tokens, overriding `jwt.audience`. */
  audience?: string | readonly string[]
}

/**
 * Bearer JWTs: an HMAC secret, one or more JWKS issuers, or both.
 *
 * @example
 * ```ts
 * const jwt: AuthJwtOptions = {
 *   issuers: [{ issuer: 'https://id.example.com/', audience: 'orders-api' }],
 *   secret: process.env.INTERNAL_JWT_SECRET, // HS256 tokens minted by your own services
 *   clockTolerance: '5s'
 * }
 * ```
 */
export interface AuthJwtOptions {
  /** HMAC secret (at least 32 bytes) for HS256/384/512 tokens. */
  secret?: string | Buffer
  /** With `secret`: the `iss` HMAC tokens must carry. Without: one JWKS issuer (shorthand for `issuers`). */
  issuer?: string
  /** JWKS URL of the `issuer` shorthand; discovered when absent. */
  jwksUri?: string
  /** JWKS issuers, each with its own pinned algorithms. */
  issuers?: readonly JwksIssuerOptions[]
  /** Algorithms of `secret` (default `['HS256']`) or of the `issuer` shorthand (default `['RS256']`). */
  algorithms?: readonly string[]
  /** Required audience (`aud` must contain one of them). */
  audience?: string | readonly string[]
  /** Leeway for `exp`/`nbf`. Default 30 s, at most 60 s. */
  clockTolerance?: Duration
  /** Longest token accepted, in bytes, checked before decoding. Default 8 KiB. */
  maxTokenSize?: number
  /** Claim holding the scopes. Default `scope` (space-separated), then `scp`. */
  scopeClaim?: string
  /** JWKS fetching: timeout (2 s), ttl (10 min), staleFor (10 min), refetchInterval (30 s). */
  jwks?: { timeout?: Duration, ttl?: Duration, staleFor?: Duration, refetchInterval?: Duration }
  /** Verified tokens cached (each until `exp`, at most 1 min). Default 10,000. */
  cacheSize?: number
}

/**
 * API keys from a header (or, opted in, a query parameter).
 *
 * @example
 * ```ts
 * import { createHash } from 'node:crypto'
 * const digest = createHash('sha256').update(process.env.PARTNER_KEY ?? '').digest('hex')
 * const apiKeys: AuthApiKeyOptions = { header: 'x-api-key', keys: { [digest]: { id: 'partner-1', scopes: ['orders:read'] } } }
 * ```
 */
export interface AuthApiKeyOptions {
  /** Header carrying the key. Default `x-api-key`. */
  header?: string
  /** Query parameter carrying the key; off by default (keys in URLs end up in logs). */
  query?: string | false
  /** Consumers by the SHA-256 hex digest of their key: keys are never configured in clear. */
  keys?: Record<string, ApiKeyConsumer>
  /** Look a key up (e.g. in a database); return null for an unknown key. */
  lookup?: (key: string) => Promise<ApiKeyConsumer | null | undefined>
  /** How long a lookup result is reused. Default 30 s. */
  cacheTtl?: Duration
  /** Lookup results kept. Default 10,000. */
  cacheSize?: number
  /** A lookup slower than this answers 503. Default 2 s. */
  lookupTimeout?: Duration
}

/**
 * Options of the auth plugin: every route needs a credential unless it is public.
 *
 * @example
 * ```ts
 * const auth: AuthOptions = {
 *   jwt: { issuer: 'https://id.example.com/', audience: 'orders-api' },
 *   apiKeys: { lookup: async (key) => await findConsumerByKeyHash(key) },
 *   public: ['GET /api/v1/status', '/docs/*']
 * }
 * ```
 */
export interface AuthOptions {
  jwt?: AuthJwtOptions
  apiKeys?: AuthApiKeyOptions
  /** Public routes by registered pattern: `'GET /health'`, `'/docs/*'`. */
  public?: readonly string[]
  /** `realm` of `WWW-Authenticate`. Default `api`. */
  realm?: string
  /** Headers set for the upstream after auth. Defaults `x-consumer-id`, `x-consumer-scopes`; `claims` maps claim → header. */
  identityHeaders?: { id?: string, scopes?: string, claims?: Record<string, string> }
  /** Forward the client's credential to the upstream. Default false: it is removed. */
  forwardCredentials?: boolean
}
