/**
 * A JWKS key source for one issuer. Written here rather than taken from get-jwks, whose fetch has
 * no working timeout (it passes `timeout` to the global fetch, which ignores it), fetches once per
 * unknown `kid` (a storm of random kids is a storm of fetches) and ties staleness to its TTL.
 *
 * - One fetch in flight per issuer; a refetch for an unknown kid at most once per `refetchInterval`.
 * - Keys are fresh for `ttl`; then served stale for up to `staleFor` while a background refresh runs.
 * - Every fetch is bounded in time (`timeout`) and size; a failure is logged once per state change.
 * - Each key carries a fast-jwt verifier built once, pinned to the algorithms its type allows.
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { createVerifier, type Algorithm, type VerifierOptions } from 'fast-jwt'
import { request } from 'undici'

export interface JwksSourceOptions {
  issuer: string
  /** JWKS URL; when absent it is discovered from `${issuer}/.well-known/openid-configuration`. */
  jwksUri: string | undefined
  algorithms: readonly Algorithm[]
  /** Claims checks shared by every key of this issuer (allowedIss, allowedAud, clockTolerance …). */
  verifierOptions: Omit<VerifierOptions, 'algorithms'>
  timeoutMs: number
  ttlMs: number
  staleForMs: number
  refetchIntervalMs: number
  log: FastifyBaseLogger
}

export type TokenVerifier = (token: string) => Record<string, unknown>

/** No key can be had: the endpoint failed and nothing usable is cached (→ 503). */
export class KeysUnavailableError extends Error {
  readonly code = 'GATEWAY_JWKS_UNAVAILABLE'
}

/** The key set is known and the token's kid is not in it (→ 401). */
export class UnknownKeyError extends Error {
  readonly code = 'GATEWAY_JWKS_UNKNOWN_KID'
}

const MAX_DOCUMENT_BYTES = 256 * 1024
const MAX_KEYS = 64
const ALGORITHMS_BY_KEY: Record<string, readonly Algorithm[]> = {
  rsa: ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'],
  'rsa-pss': ['PS256', 'PS384', 'PS512'],
  'ec:prime256v1': ['ES256'],
  'ec:secp384r1': ['ES384'],
  'ec:secp521r1': ['ES512'],
  ed25519: ['EdDSA'],
  ed448: ['EdDSA']
}

function keyAlgorithms (key: KeyObject): readonly Algorithm[] {
  const type = key.asymmetricKeyType ?? ''
  return ALGORITHMS_BY_KEY[type === 'ec' ? `ec:${key.asymmetricKeyDetails?.namedCurve ?? ''}` : type] ?? []
}

async function fetchJson (url: string, timeoutMs: number): Promise<unknown> {
  const signal = AbortSignal.timeout(timeoutMs)
  const response = await request(url, { method: 'GET', signal, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, headers: { accept: 'application/json' } })
  if (response.statusCode !== 200) {
    await response.body.dump()
    throw Object.assign(new Error('JWKS endpoint answered an error status'), { code: `GATEWAY_JWKS_STATUS_${response.statusCode}` })
  }
  let size = 0
  const chunks: Buffer[] = []
  for await (const chunk of response.body) {
    size += (chunk as Buffer).length
    if (size > MAX_DOCUMENT_BYTES) {
      response.body.destroy()
      throw Object.assign(new Error('JWKS document too large'), { code: 'GATEWAY_JWKS_TOO_LARGE' })
    }
    chunks.push(chunk as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw Object.assign(new Error('JWKS document is not JSON'), { code: 'GATEWAY_JWKS_NOT_JSON' })
  }
}

export class JwksKeySource {
  readonly issuer: string
  readonly #options: JwksSourceOptions
  #jwksUri: string | undefined
  #verifiers = new Map<string, TokenVerifier>()
  #fetchedAt = Number.NEGATIVE_INFINITY
  #lastAttemptAt = Number.NEGATIVE_INFINITY
  #inflight: Promise<void> | undefined
  #reachable = true

  constructor (options: JwksSourceOptions) {
    this.#options = options
    this.issuer = options.issuer
    this.#jwksUri = options.jwksUri
  }

  /** The verifier for the token's key id; fetches or refreshes the key set as needed. */
  async verifierFor (kid: string | undefined): Promise<TokenVerifier> {
    const { ttlMs, staleForMs, refetchIntervalMs } = this.#options
    const now = Date.now()
    const age = now - this.#fetchedAt
    const known = this.#lookup(kid)

    if (age < ttlMs) {
      if (known !== undefined) return known
      // A fresh set without this kid: a rotation, or a forged kid. Refetch, but not for every kid.
      if (now - this.#lastAttemptAt >= refetchIntervalMs || this.#inflight !== undefined) await this.#refresh().catch(ignore)
      const rotated = this.#lookup(kid)
      if (rotated !== undefined) return rotated
      if (Date.now() - this.#fetchedAt < ttlMs) throw new UnknownKeyError('no key for this kid')
      throw new KeysUnavailableError('key set could not be refreshed')
    }

    if (known !== undefined && age < ttlMs + staleForMs) {
      // Stale but usable: answer now and refresh in the background (stale-while-revalidate).
      if (now - this.#lastAttemptAt >= refetchIntervalMs) this.#refresh().catch(ignore)
      return known
    }

    if (now - this.#lastAttemptAt >= refetchIntervalMs || this.#inflight !== undefined) await this.#refresh().catch(ignore)
    if (Date.now() - this.#fetchedAt < ttlMs) {
      const fetched = this.#lookup(kid)
      if (fetched !== undefined) return fetched
      throw new UnknownKeyError('no key for this kid')
    }
    throw new KeysUnavailableError('no usable key set')
  }

  #lookup (kid: string | undefined): TokenVerifier | undefined {
    if (kid !== undefined) return this.#verifiers.get(kid)
    // No kid in the token: only unambiguous when the issuer publishes exactly one key.
    return this.#verifiers.size === 1 ? this.#verifiers.values().next().value : undefined
  }

  #refresh (): Promise<void> {
    this.#inflight ??= this.#fetchKeys().finally(() => { this.#inflight = undefined })
    return this.#inflight
  }

  async #fetchKeys (): Promise<void> {
    this.#lastAttemptAt = Date.now()
    const { log, issuer, timeoutMs } = this.#options
    // Discovery and the key set share one deadline: a cold start is bounded by `timeout`, not 2×.
    const deadline = Date.now() + timeoutMs
    const remaining = (): number => Math.max(1, deadline - Date.now())
    const discovered = this.#options.jwksUri === undefined
    try {
      this.#jwksUri ??= await this.#discover(timeoutMs)
      this.#verifiers = this.#buildVerifiers(await fetchJson(this.#jwksUri, remaining()))
      this.#fetchedAt = Date.now()
      if (!this.#reachable) log.info({ issuer }, 'JWKS endpoint reachable again')
      this.#reachable = true
    } catch (error) {
      // A discovered URI may be what changed: discover again on the next attempt.
      if (discovered) this.#jwksUri = undefined
      // AbortSignal.timeout rejects with a DOMException whose `code` is a number: log its name.
      const reason = typeof (error as { code?: unknown }).code === 'string' ? (error as { code: string }).code : (error as Error).name
      if (this.#reachable) log.warn({ issuer, code: reason }, 'JWKS fetch failed; serving cached keys while they last')
      this.#reachable = false
      throw error
    }
  }

  async #discover (timeoutMs: number): Promise<string> {
    const document = await fetchJson(`${this.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`, timeoutMs)
    const uri = (document as { jwks_uri?: unknown } | null)?.jwks_uri
    if (typeof uri !== 'string' || !/^https?:\/\//.test(uri)) {
      throw Object.assign(new Error('discovery document without a usable jwks_uri'), { code: 'GATEWAY_JWKS_DISCOVERY' })
    }
    return uri
  }

  #buildVerifiers (document: unknown): Map<string, TokenVerifier> {
    const keys = (document as { keys?: unknown } | null)?.keys
    if (!Array.isArray(keys)) throw Object.assign(new Error('JWKS without keys'), { code: 'GATEWAY_JWKS_NO_KEYS' })
    const verifiers = new Map<string, TokenVerifier>()
    for (const jwk of keys.slice(0, MAX_KEYS) as Array<Record<string, unknown>>) {
      if (typeof jwk !== 'object' || jwk === null || (jwk.use !== undefined && jwk.use !== 'sig')) continue
      let key: KeyObject
      try {
        key = createPublicKey({ key: jwk as never, format: 'jwk' })
      } catch {
        continue
      }
      // Algorithms: the issuer's pinned list ∩ what the key type can do ∩ the key's own `alg`.
      const algorithms = this.#options.algorithms.filter((alg) =>
        keyAlgorithms(key).includes(alg) && (jwk.alg === undefined || jwk.alg === alg))
      if (algorithms.length === 0) continue
      const kid = typeof jwk.kid === 'string' ? jwk.kid : ''
      verifiers.set(kid, createVerifier({
        ...this.#options.verifierOptions,
        key: key.export({ type: 'spki', format: 'pem' }).toString(),
        algorithms: [...algorithms],
        cache: false
      }) as TokenVerifier)
    }
    return verifiers
  }
}

function ignore (): void {}
