/**
 * Bearer-token verification: size cap → structural decode → issuer routing (from configuration
 * only) → signature and claims through fast-jwt, with algorithms pinned per key source → consumer.
 * Verified consumers are cached by token until `exp` (at most one minute, so key removal bites).
 */
import { createVerifier, type Algorithm, type VerifierOptions } from 'fast-jwt'
import type { FastifyBaseLogger } from 'fastify'
import type { Consumer } from '../types.js'
import { BoundedCache } from './bounded-cache.js'
import { JwksKeySource, KeysUnavailableError, type TokenVerifier } from './jwks.js'

export interface ResolvedJwtOptions {
  secret: { key: string | Buffer, algorithms: readonly Algorithm[], issuer: string | undefined } | undefined
  issuers: ReadonlyArray<{ issuer: string, jwksUri: string | undefined, algorithms: readonly Algorithm[], audience: readonly string[] | undefined }>
  audience: readonly string[] | undefined
  clockToleranceMs: number
  maxTokenBytes: number
  scopeClaim: string | undefined
  jwks: { timeoutMs: number, ttlMs: number, staleForMs: number, refetchIntervalMs: number }
  cacheSize: number
}

/** Why a token was refused; goes to the debug log, never to the client. */
export class TokenRejectedError extends Error {
  readonly reason: string
  constructor (reason: string) {
    super(reason)
    this.reason = reason
  }
}

const CONSUMER_CACHE_TTL_MS = 60_000
// Verified tokens are found by their last characters (part of the signature), and compared in
// full: a Map keyed by the whole token hashed all of it on every request (a new string each time),
// ~1 µs for a ~700-character RS256 token. Only verified tokens are ever stored, so a token crafted
// to share a cached token's tail finds an entry whose token differs, and is verified as a miss.
const CACHE_KEY_CHARS = 32
const CONSUMER_ID = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/

function decodeSegment (segment: string): unknown {
  try {
    return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
  } catch {
    return undefined
  }
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Scopes from the configured claim, else `scope` (space-separated, RFC 8693) or `scp` (array or string). */
export function scopesOf (claims: Record<string, unknown>, claim: string | undefined): string[] {
  const value = claim === undefined ? (claims.scope ?? claims.scp) : claims[claim]
  const list = typeof value === 'string' ? value.split(' ') : Array.isArray(value) ? value : []
  return list.filter((scope): scope is string => typeof scope === 'string' && SCOPE_TOKEN.test(scope))
}

export interface TokenVerification {
  /** Verifies a token (from the cache when it was verified before); throws or rejects with TokenRejectedError or KeysUnavailableError. */
  verify: (token: string) => Consumer | Promise<Consumer>
  /** The consumer of a token verified before and not yet expired, without any other check. */
  cached: (token: string) => Consumer | undefined
}

export function createTokenVerifier (options: ResolvedJwtOptions, log: FastifyBaseLogger): TokenVerification {
  // fast-jwt checks allowedIss/allowedAud only when the claim is present: a configured check makes
  // the claim required, or a token without `aud` would pass an audience check.
  const required = (...claims: Array<string | false>): string[] => ['exp', ...claims.filter((claim): claim is string => claim !== false)]
  const shared: Omit<VerifierOptions, 'algorithms'> = {
    clockTolerance: options.clockToleranceMs,
    requiredClaims: required(options.audience !== undefined && 'aud'),
    ...(options.audience === undefined ? {} : { allowedAud: [...options.audience] })
  }
  const secretVerifier: TokenVerifier | undefined = options.secret === undefined
    ? undefined
    : createVerifier({
      ...shared,
      key: options.secret.key,
      algorithms: [...options.secret.algorithms],
      cache: false,
      requiredClaims: required(options.audience !== undefined && 'aud', options.secret.issuer !== undefined && 'iss'),
      ...(options.secret.issuer === undefined ? {} : { allowedIss: [options.secret.issuer] })
    }) as TokenVerifier
  const sources = new Map(options.issuers.map((issuer) => [issuer.issuer, new JwksKeySource({
    issuer: issuer.issuer,
    jwksUri: issuer.jwksUri,
    algorithms: issuer.algorithms,
    verifierOptions: {
      ...shared,
      allowedIss: [issuer.issuer],
      requiredClaims: required('iss', (issuer.audience ?? options.audience) !== undefined && 'aud'),
      ...(issuer.audience === undefined ? {} : { allowedAud: [...issuer.audience] })
    },
    timeoutMs: options.jwks.timeoutMs,
    ttlMs: options.jwks.ttlMs,
    staleForMs: options.jwks.staleForMs,
    refetchIntervalMs: options.jwks.refetchIntervalMs,
    log
  })]))
  const cache = new BoundedCache<string, { token: string, consumer: Consumer }>(options.cacheSize)

  function cached (token: string): Consumer | undefined {
    const entry = cache.get(token.slice(-CACHE_KEY_CHARS))
    return entry !== undefined && entry.token === token ? entry.consumer : undefined
  }

  function toConsumer (token: string, claims: Record<string, unknown>): Consumer {
    if (typeof claims.sub !== 'string' || !CONSUMER_ID.test(claims.sub)) throw new TokenRejectedError('sub missing or not a printable string')
    const consumer: Consumer = Object.freeze({ id: claims.sub, kind: 'jwt', scopes: Object.freeze(scopesOf(claims, options.scopeClaim)), claims: Object.freeze(claims) })
    cache.set(token.slice(-CACHE_KEY_CHARS), { token, consumer }, Math.min((claims.exp as number) * 1000, Date.now() + CONSUMER_CACHE_TTL_MS))
    return consumer
  }

  function verifyWith (verifier: TokenVerifier, token: string): Consumer {
    let claims: Record<string, unknown>
    try {
      claims = verifier(token)
    } catch (error) {
      throw new TokenRejectedError((error as { code?: string }).code ?? 'invalid token')
    }
    return toConsumer(token, claims)
  }

  function verify (token: string): Consumer | Promise<Consumer> {
    const known = cached(token)
    if (known !== undefined) return known
    // Refuse oversized tokens before decoding anything.
    if (token.length > options.maxTokenBytes) throw new TokenRejectedError('token over the size cap')
    const parts = token.split('.')
    if (parts.length !== 3) throw new TokenRejectedError('not a compact JWS')
    const header = decodeSegment(parts[0])
    const payload = decodeSegment(parts[1])
    if (!isObject(header) || !isObject(payload)) throw new TokenRejectedError('header or payload is not a JSON object')
    // The key source comes from configuration: an unverified `iss` only selects among configured
    // issuers, and `jku`, `x5u`, `jwk` headers are never read.
    if (payload.iss !== undefined && typeof payload.iss !== 'string') throw new TokenRejectedError('iss is not a string')
    const source = typeof payload.iss === 'string' ? sources.get(payload.iss) : undefined
    if (source !== undefined) {
      const kid = typeof header.kid === 'string' ? header.kid : undefined
      return source.verifierFor(kid).then((verifier) => verifyWith(verifier, token))
    }
    if (secretVerifier === undefined) throw new TokenRejectedError('issuer not configured')
    return verifyWith(secretVerifier, token)
  }

  return { verify, cached }
}

export { KeysUnavailableError }
