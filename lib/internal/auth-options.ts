/** Validates the `auth` options once, at registration, into frozen, ready-to-use settings. */
import type { Algorithm } from 'fast-jwt'
import { InvalidOptionError } from '../errors.js'
import type { ApiKeyConsumer } from '../types.js'
import { toConsumer, type ResolvedApiKeyOptions } from './api-keys.js'
import { toMilliseconds } from './duration.js'
import type { ResolvedJwtOptions } from './jwt.js'
import { headerName, isPlainObject, optionalObject, positiveInteger, rejectUnknownKeys, stringList } from './options.js'
import { isCanonicalRequestTarget } from './request-target.js'
import { RESERVED_HEADERS } from './headers.js'

export const AUTH_DEFAULTS = Object.freeze({
  realm: 'api',
  clockToleranceMs: 30_000,
  maxClockToleranceMs: 60_000,
  maxTokenBytes: 8 * 1024,
  jwks: Object.freeze({ timeoutMs: 2_000, ttlMs: 600_000, staleForMs: 600_000, refetchIntervalMs: 30_000 }),
  tokenCacheSize: 10_000,
  apiKeyHeader: 'x-api-key',
  apiKeyCacheTtlMs: 30_000,
  apiKeyCacheSize: 10_000,
  apiKeyLookupTimeoutMs: 2_000,
  identityHeaders: Object.freeze({ id: 'x-consumer-id', scopes: 'x-consumer-scopes' })
})

const HMAC = ['HS256', 'HS384', 'HS512'] as const
const ASYMMETRIC = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const

/** One `public` entry: `'GET /health'`, `'/docs/*'` (method optional; `/*` matches below the prefix). */
export interface PublicRoutePattern {
  readonly methods: ReadonlySet<string> | undefined
  readonly path: string
  readonly below: boolean
}

export interface ResolvedAuthOptions {
  readonly jwt: ResolvedJwtOptions | undefined
  readonly apiKeys: ResolvedApiKeyOptions | undefined
  readonly publicRoutes: readonly PublicRoutePattern[]
  readonly realm: string
  readonly identityHeaders: Readonly<{ id: string, scopes: string, claims: ReadonlyArray<readonly [claim: string, header: string]> }>
  readonly forwardCredentials: boolean
}

function algorithms<T extends string> (value: unknown, path: string, allowed: readonly T[], fallback: T[]): T[] {
  const list = stringList(value, path, fallback)
  if (list.length === 0) throw new InvalidOptionError(path, 'expected at least one algorithm')
  list.forEach((alg, i) => { if (!allowed.includes(alg as T)) throw new InvalidOptionError(`${path}[${i}]`, `expected one of ${allowed.join(', ')}`) })
  return list as T[]
}

function audience (value: unknown, path: string): string[] | undefined {
  if (value === undefined) return undefined
  const list = typeof value === 'string' ? [value] : stringList(value, path)
  if (list.length === 0) throw new InvalidOptionError(path, 'expected a non-empty audience')
  return list
}

function httpUrl (value: unknown, path: string): string {
  if (typeof value !== 'string' || !/^https?:\/\/[^\s]+$/.test(value) || !URL.canParse(value)) throw new InvalidOptionError(path, 'expected an http(s) URL')
  return value
}

/** A header auth may set: never one that frames, routes or authenticates the request. */
function identityHeader (value: unknown, path: string): string {
  const name = headerName(value, path)
  if (RESERVED_HEADERS.has(name)) throw new InvalidOptionError(path, `"${name}" is reserved (framing, forwarding or credentials)`)
  return name
}

function duration (value: unknown, path: string, fallback: number): number {
  return value === undefined ? fallback : toMilliseconds(value, path)
}

function resolveJwt (input: unknown): ResolvedJwtOptions | undefined {
  if (input === undefined) return undefined
  const jwt = optionalObject(input, 'auth.jwt')
  rejectUnknownKeys(jwt, ['secret', 'issuer', 'jwksUri', 'issuers', 'algorithms', 'audience', 'clockTolerance', 'maxTokenSize', 'scopeClaim', 'jwks', 'cacheSize'], 'auth.jwt')
  const hasSecret = jwt.secret !== undefined
  if (hasSecret && !(typeof jwt.secret === 'string' || Buffer.isBuffer(jwt.secret))) throw new InvalidOptionError('auth.jwt.secret', 'expected a string or Buffer')
  if (hasSecret && (jwt.secret as string | Buffer).length < 32) throw new InvalidOptionError('auth.jwt.secret', 'an HMAC secret needs at least 32 bytes')
  const issuerList = jwt.issuers === undefined ? [] : jwt.issuers
  if (!Array.isArray(issuerList)) throw new InvalidOptionError('auth.jwt.issuers', 'expected an array')
  const issuers = issuerList.map((entry: unknown, i: number) => {
    const path = `auth.jwt.issuers[${i}]`
    if (!isPlainObject(entry)) throw new InvalidOptionError(path, 'expected an object')
    rejectUnknownKeys(entry, ['issuer', 'jwksUri', 'algorithms', 'audience'], path)
    return {
      issuer: httpUrl(entry.issuer, `${path}.issuer`),
      jwksUri: entry.jwksUri === undefined ? undefined : httpUrl(entry.jwksUri, `${path}.jwksUri`),
      algorithms: algorithms(entry.algorithms, `${path}.algorithms`, ASYMMETRIC, ['RS256']),
      audience: audience(entry.audience, `${path}.audience`)
    }
  })
  // `issuer` without a secret is the one-issuer shorthand of DESIGN.md; with a secret it is the
  // `iss` that HMAC tokens must carry.
  if (!hasSecret && jwt.issuer !== undefined) {
    issuers.push({
      issuer: httpUrl(jwt.issuer, 'auth.jwt.issuer'),
      jwksUri: jwt.jwksUri === undefined ? undefined : httpUrl(jwt.jwksUri, 'auth.jwt.jwksUri'),
      algorithms: algorithms(jwt.algorithms, 'auth.jwt.algorithms', ASYMMETRIC, ['RS256']),
      audience: undefined
    })
  } else if (jwt.jwksUri !== undefined) {
    throw new InvalidOptionError('auth.jwt.jwksUri', 'jwksUri needs `issuer` without `secret` (or use `issuers`)')
  }
  if (!hasSecret && issuers.length === 0) throw new InvalidOptionError('auth.jwt', 'configure `secret`, `issuer` or `issuers`')
  // An identity provider issues tokens for many APIs: without an audience, any of them would pass.
  const sharedAudience = audience(jwt.audience, 'auth.jwt.audience')
  issuers.forEach((entry, i) => {
    if (entry.audience === undefined && sharedAudience === undefined) throw new InvalidOptionError(`auth.jwt.issuers[${i}].audience`, 'JWKS issuers need an audience (here or in auth.jwt.audience)')
  })
  if (new Set(issuers.map((entry) => entry.issuer)).size !== issuers.length) throw new InvalidOptionError('auth.jwt.issuers', 'an issuer is listed twice')
  const clockToleranceMs = jwt.clockTolerance === undefined ? AUTH_DEFAULTS.clockToleranceMs : toMilliseconds(jwt.clockTolerance, 'auth.jwt.clockTolerance', { allowZero: true })
  if (clockToleranceMs > AUTH_DEFAULTS.maxClockToleranceMs) throw new InvalidOptionError('auth.jwt.clockTolerance', 'at most 60 s')
  const jwks = optionalObject(jwt.jwks, 'auth.jwt.jwks')
  rejectUnknownKeys(jwks, ['timeout', 'ttl', 'staleFor', 'refetchInterval'], 'auth.jwt.jwks')
  return Object.freeze({
    secret: hasSecret
      ? {
          key: jwt.secret as string | Buffer,
          algorithms: algorithms(jwt.algorithms, 'auth.jwt.algorithms', HMAC, ['HS256']) as Algorithm[],
          issuer: jwt.issuer === undefined ? undefined : (typeof jwt.issuer === 'string' ? jwt.issuer : httpUrl(jwt.issuer, 'auth.jwt.issuer'))
        }
      : undefined,
    issuers: issuers.map((entry) => ({ ...entry, algorithms: entry.algorithms as Algorithm[] })),
    audience: audience(jwt.audience, 'auth.jwt.audience'),
    clockToleranceMs,
    maxTokenBytes: positiveInteger(jwt.maxTokenSize, 'auth.jwt.maxTokenSize', AUTH_DEFAULTS.maxTokenBytes),
    scopeClaim: jwt.scopeClaim === undefined ? undefined : stringList([jwt.scopeClaim], 'auth.jwt.scopeClaim')[0],
    jwks: {
      timeoutMs: duration(jwks.timeout, 'auth.jwt.jwks.timeout', AUTH_DEFAULTS.jwks.timeoutMs),
      ttlMs: duration(jwks.ttl, 'auth.jwt.jwks.ttl', AUTH_DEFAULTS.jwks.ttlMs),
      staleForMs: jwks.staleFor === undefined ? AUTH_DEFAULTS.jwks.staleForMs : toMilliseconds(jwks.staleFor, 'auth.jwt.jwks.staleFor', { allowZero: true }),
      refetchIntervalMs: jwks.refetchInterval === undefined ? AUTH_DEFAULTS.jwks.refetchIntervalMs : toMilliseconds(jwks.refetchInterval, 'auth.jwt.jwks.refetchInterval', { allowZero: true })
    },
    cacheSize: positiveInteger(jwt.cacheSize, 'auth.jwt.cacheSize', AUTH_DEFAULTS.tokenCacheSize)
  })
}

function resolveApiKeys (input: unknown): ResolvedApiKeyOptions | undefined {
  if (input === undefined) return undefined
  const options = optionalObject(input, 'auth.apiKeys')
  rejectUnknownKeys(options, ['header', 'query', 'keys', 'lookup', 'cacheTtl', 'cacheSize', 'lookupTimeout'], 'auth.apiKeys')
  if (options.keys === undefined && options.lookup === undefined) throw new InvalidOptionError('auth.apiKeys', 'configure `keys` (SHA-256 hex → consumer) or `lookup`')
  if (options.lookup !== undefined && typeof options.lookup !== 'function') throw new InvalidOptionError('auth.apiKeys.lookup', 'expected an async function')
  let keys: Map<string, ApiKeyConsumer> | undefined
  if (options.keys !== undefined) {
    keys = new Map()
    for (const [digest, consumer] of Object.entries(optionalObject(options.keys, 'auth.apiKeys.keys'))) {
      const path = `auth.apiKeys.keys.${digest}`
      if (!/^[0-9a-fA-F]{64}$/.test(digest)) throw new InvalidOptionError(path, 'keys are listed by their SHA-256 digest in hex, never in clear')
      try {
        toConsumer(consumer as ApiKeyConsumer)
      } catch (error) {
        throw new InvalidOptionError(path, (error as Error).message)
      }
      keys.set(digest.toLowerCase(), consumer as ApiKeyConsumer)
    }
  }
  return Object.freeze({
    header: options.header === undefined ? AUTH_DEFAULTS.apiKeyHeader : headerName(options.header, 'auth.apiKeys.header'),
    query: options.query === undefined || options.query === false ? undefined : stringList([options.query], 'auth.apiKeys.query')[0],
    keys,
    lookup: options.lookup as ResolvedApiKeyOptions['lookup'],
    cacheTtlMs: options.cacheTtl === undefined ? AUTH_DEFAULTS.apiKeyCacheTtlMs : toMilliseconds(options.cacheTtl, 'auth.apiKeys.cacheTtl', { allowZero: true }),
    cacheSize: positiveInteger(options.cacheSize, 'auth.apiKeys.cacheSize', AUTH_DEFAULTS.apiKeyCacheSize),
    lookupTimeoutMs: duration(options.lookupTimeout, 'auth.apiKeys.lookupTimeout', AUTH_DEFAULTS.apiKeyLookupTimeoutMs)
  })
}

function resolvePublicRoutes (input: unknown): PublicRoutePattern[] {
  return stringList(input, 'auth.public').map((entry, i) => {
    const path = `auth.public[${i}]`
    const match = /^(?:([A-Z]+(?:,[A-Z]+)*) +)?(\/\S*)$/.exec(entry)
    if (match === null) throw new InvalidOptionError(path, 'expected "[METHOD] /path" or "[METHOD] /prefix/*"')
    const below = match[2].endsWith('/*')
    const pattern = below ? match[2].slice(0, -2) : match[2]
    if (pattern !== '' && !isCanonicalRequestTarget(pattern.replace(/:[^/]+/g, 'p'))) throw new InvalidOptionError(path, 'not a canonical path')
    const methods = match[1]?.split(',')
    // A public GET is a public HEAD too: Fastify answers HEAD from the GET route.
    if (methods?.includes('GET') === true && !methods.includes('HEAD')) methods.push('HEAD')
    return Object.freeze({ methods: methods === undefined ? undefined : new Set(methods), path: pattern, below })
  })
}

export function resolveAuthOptions (input: unknown): ResolvedAuthOptions {
  const options = optionalObject(input, 'auth')
  rejectUnknownKeys(options, ['jwt', 'apiKeys', 'public', 'realm', 'identityHeaders', 'forwardCredentials'], 'auth')
  const jwt = resolveJwt(options.jwt)
  const apiKeys = resolveApiKeys(options.apiKeys)
  if (jwt === undefined && apiKeys === undefined) throw new InvalidOptionError('auth', 'configure `jwt`, `apiKeys` or both')
  const identity = optionalObject(options.identityHeaders, 'auth.identityHeaders')
  rejectUnknownKeys(identity, ['id', 'scopes', 'claims'], 'auth.identityHeaders')
  const claims = Object.entries(optionalObject(identity.claims, 'auth.identityHeaders.claims'))
    .map(([claim, header]) => [claim, identityHeader(header, `auth.identityHeaders.claims.${claim}`)] as const)
  const realm = options.realm === undefined ? AUTH_DEFAULTS.realm : String(options.realm)
  if (!/^[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(realm)) throw new InvalidOptionError('auth.realm', 'expected 1–64 printable characters without quotes or backslashes')
  return Object.freeze({
    jwt,
    apiKeys,
    publicRoutes: Object.freeze(resolvePublicRoutes(options.public)),
    realm,
    identityHeaders: Object.freeze({
      id: identity.id === undefined ? AUTH_DEFAULTS.identityHeaders.id : identityHeader(identity.id, 'auth.identityHeaders.id'),
      scopes: identity.scopes === undefined ? AUTH_DEFAULTS.identityHeaders.scopes : identityHeader(identity.scopes, 'auth.identityHeaders.scopes'),
      claims: Object.freeze(claims)
    }),
    forwardCredentials: options.forwardCredentials === true
  })
}

/** Every header name the auth plugin sets: the request guard strips client copies of all of them. */
export function identityHeaderNames (resolved: ResolvedAuthOptions): string[] {
  return [resolved.identityHeaders.id, resolved.identityHeaders.scopes, ...resolved.identityHeaders.claims.map(([, header]) => header)]
}

/** The keys of `config.gateway` (GatewayRoutePolicy). */
const ROUTE_POLICY_KEYS: readonly string[] = ['public', 'auth', 'scopes', 'service', 'rateLimit']

/**
 * `config.gateway` must be an object of known keys: a misspelt `scope` would otherwise leave the
 * route open to every valid credential (Fastify infers route config types from the literal).
 */
export function assertRoutePolicyShape (policy: unknown, url: string): void {
  if (policy === undefined) return
  const where = `config.gateway of ${url}`
  if (!isPlainObject(policy)) throw new InvalidOptionError(where, 'expected an object')
  rejectUnknownKeys(policy, ROUTE_POLICY_KEYS, where)
}
