/**
 * A local OpenID-style identity provider on 127.0.0.1: it publishes a discovery document and a
 * JWKS, signs tokens with keys it generates, rotates them, and fails on demand — what a team needs
 * to test JWT authentication at its gateway without a real provider.
 */
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto'
import { createSigner, type JwtHeader } from 'fast-jwt'

/**
 * The signing algorithms the identity provider can generate keys for.
 *
 * @example
 * ```ts
 * const idp = await createIdentityProvider({ algorithm: 'ES256' as IdentityProviderAlgorithm })
 * ```
 */
export type IdentityProviderAlgorithm = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'ES256' | 'ES384' | 'EdDSA'

/**
 * Options of {@link createIdentityProvider}.
 *
 * @example
 * ```ts
 * const idp = await createIdentityProvider({ algorithm: 'RS256', audience: 'orders-api' })
 * ```
 */
export interface IdentityProviderOptions {
  /** Signing algorithm of generated keys. Default `'RS256'`. */
  algorithm?: IdentityProviderAlgorithm
  /** Audience put in tokens by default. Default `'test-api'`. */
  audience?: string
}

/**
 * How the provider answers discovery and JWKS requests: `'up'` serves them; `'down'` answers 503;
 * `'hang'` never answers (until closed); `'slow'` serves them after a delay; `'garbage'` answers
 * 200 with a body that is not JSON; `'empty'` answers `{ keys: [] }` (and `{}` for discovery).
 *
 * @example
 * ```ts
 * idp.setMode('hang') // JWKS never answers: a cold-cache request gets 503 within the fetch timeout
 * idp.setMode('up')
 * ```
 */
export type JwksMode = 'up' | 'down' | 'hang' | 'slow' | 'garbage' | 'empty'

/**
 * Options of {@link IdentityProvider.sign}.
 *
 * @example
 * ```ts
 * const forged = idp.sign({ sub: 'alice' }, { header: { alg: 'none' } })
 * const old = idp.sign({ sub: 'alice' }, { key: 'previous' })
 * ```
 */
export interface IdentityProviderSignOptions {
  /** JOSE header fields to add or override, applied last (`{ kid: undefined }` removes the kid). */
  header?: Record<string, unknown>
  /** The `kid` header instead of the signing key's own. */
  kid?: string
  /** `'previous'` signs with the key that `rotate()` replaced. Default `'current'`. */
  key?: 'current' | 'previous'
}

/**
 * A running identity provider.
 *
 * @example
 * ```ts
 * const idp = await createIdentityProvider({ audience: 'orders-api' })
 * await app.register(gateway, { auth: { jwt: { issuer: idp.issuer, audience: 'orders-api' } } })
 * const response = await app.inject({ url: '/api/v1/me', headers: { authorization: `Bearer ${idp.sign({ sub: 'alice', scope: 'profile:read' })}` } })
 * await idp.close()
 * ```
 */
export interface IdentityProvider {
  /** `http://127.0.0.1:<port>` — also the `iss` of signed tokens. */
  readonly issuer: string
  /** `${issuer}/.well-known/jwks.json` */
  readonly jwksUri: string
  /** JWKS document requests received, in any mode. */
  readonly jwksRequests: number
  /** Discovery document requests received, in any mode. */
  readonly discoveryRequests: number
  /** The current key id. */
  readonly kid: string
  /**
   * Sign a token. Defaults: `iss` = issuer, `aud` = audience, `sub` = `'user-1'`, `iat` = now,
   * `exp` = now + 300 s, signed with the current key and its kid. `claims` override the defaults; a
   * claim set to undefined is removed. `iat` must be an integer and `exp`/`nbf` positive integers:
   * fast-jwt would change or refuse other values, so they throw here.
   */
  sign: (claims?: Record<string, unknown>, options?: IdentityProviderSignOptions) => string
  /** Generate a new key; `keepPrevious` (default false): whether the JWKS still publishes the one replaced. */
  rotate: (options?: { keepPrevious?: boolean }) => void
  /** Answer discovery and JWKS requests this way from now on; `delayMs` (default 1,000) is for `'slow'`. */
  setMode: (mode: JwksMode, delayMs?: number) => void
  /** The current public key as PEM (SPKI), e.g. as the HMAC secret of an algorithm-confusion attack. */
  readonly publicKeyPem: string
  /** The current public key as published in the JWKS. */
  readonly publicJwk: Record<string, unknown>
  /** Close the server, destroying open connections (a `'hang'` never keeps the process alive). */
  close: () => Promise<void>
}

interface SigningKey {
  kid: string
  privatePem: string
  publicPem: string
  jwk: Readonly<Record<string, unknown>>
}

const ALGORITHMS: readonly IdentityProviderAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA']
const MODES: readonly JwksMode[] = ['up', 'down', 'hang', 'slow', 'garbage', 'empty']
const DISCOVERY_PATH = '/.well-known/openid-configuration'
const JWKS_PATH = '/.well-known/jwks.json'
const DEFAULTS = { algorithm: 'RS256', audience: 'test-api', subject: 'user-1', lifetimeSeconds: 300, slowDelayMs: 1_000 } as const

function generateKeys (algorithm: IdentityProviderAlgorithm): { privateKey: KeyObject, publicKey: KeyObject } {
  if (algorithm === 'ES256') return generateKeyPairSync('ec', { namedCurve: 'P-256' })
  if (algorithm === 'ES384') return generateKeyPairSync('ec', { namedCurve: 'P-384' })
  if (algorithm === 'EdDSA') return generateKeyPairSync('ed25519')
  return generateKeyPairSync('rsa', { modulusLength: 2048 })
}

function createSigningKey (algorithm: IdentityProviderAlgorithm): SigningKey {
  const { privateKey, publicKey } = generateKeys(algorithm)
  const kid = randomBytes(4).toString('hex')
  const exported = publicKey.export({ format: 'jwk' })
  return {
    kid,
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string,
    jwk: Object.freeze({ kty: exported.kty, kid, use: 'sig', alg: algorithm, ...exported })
  }
}

// fast-jwt's signer drops or floors some claim values and refuses others (see sign() in
// fast-jwt/src/signer.js); refuse them here so a test never gets a token other than it asked for.
function assertEncodable (payload: Record<string, unknown>): void {
  const { iat, exp, nbf } = payload
  if (iat !== undefined && !(Number.isInteger(iat) && Math.floor((iat as number) * 1000 / 1000) === iat)) {
    throw new TypeError(`identity provider: iat must be an integer, got ${String(iat)}`)
  }
  for (const [name, value] of [['exp', exp], ['nbf', nbf]] as const) {
    if (value !== undefined && !(Number.isInteger(value) && (value as number) > 0)) {
      throw new TypeError(`identity provider: ${name} must be a positive integer, got ${String(value)}`)
    }
  }
}

/**
 * Start an identity provider on a free loopback port.
 *
 * @example
 * ```ts
 * const idp = await createIdentityProvider({ algorithm: 'ES256' })
 * // … configure the gateway with issuer idp.issuer and JWKS idp.jwksUri …
 * const token = idp.sign({ sub: 'alice', scope: 'orders:read' })
 * const expired = idp.sign({ exp: Math.floor(Date.now() / 1000) - 60 })
 * idp.setMode('down') // the JWKS now answers 503
 * await idp.close()
 * ```
 */
export async function createIdentityProvider (options: IdentityProviderOptions = {}): Promise<IdentityProvider> {
  const algorithm = options.algorithm ?? DEFAULTS.algorithm
  const audience = options.audience ?? DEFAULTS.audience
  if (!ALGORITHMS.includes(algorithm)) throw new TypeError(`identity provider: unsupported algorithm ${String(algorithm)}`)

  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()
  let current = createSigningKey(algorithm)
  let previous: SigningKey | undefined
  let published: SigningKey[] = [current]
  let mode: JwksMode = 'up'
  let slowDelayMs: number = DEFAULTS.slowDelayMs
  let jwksRequests = 0
  let discoveryRequests = 0
  let issuer = ''

  function documentFor (path: string): object {
    if (path === DISCOVERY_PATH) return mode === 'empty' ? {} : { issuer, jwks_uri: `${issuer}${JWKS_PATH}` }
    return { keys: mode === 'empty' ? [] : published.map((key) => key.jwk) }
  }

  function send (res: ServerResponse, status: number, body: string): void {
    if (res.destroyed) return
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    res.end(body)
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    if (req.method !== 'GET' || (path !== DISCOVERY_PATH && path !== JWKS_PATH)) {
      send(res, 404, JSON.stringify({ error: 'not found' }))
      return
    }
    if (path === JWKS_PATH) jwksRequests++
    else discoveryRequests++
    if (mode === 'hang') return
    if (mode === 'down') return send(res, 503, JSON.stringify({ error: 'unavailable' }))
    // Announced as JSON on purpose: a client must not trust the content-type.
    if (mode === 'garbage') return send(res, 200, '<html>this is not JSON')
    const body = JSON.stringify(documentFor(path))
    if (mode !== 'slow') return send(res, 200, body)
    const timer = setTimeout(() => {
      timers.delete(timer)
      send(res, 200, body)
    }, slowDelayMs)
    timer.unref()
    timers.add(timer)
  })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  issuer = `http://127.0.0.1:${port}`

  return {
    issuer,
    jwksUri: `${issuer}${JWKS_PATH}`,
    get jwksRequests () { return jwksRequests },
    get discoveryRequests () { return discoveryRequests },
    get kid () { return current.kid },
    get publicKeyPem () { return current.publicPem },
    get publicJwk () { return { ...current.jwk } },
    sign (claims = {}, signOptions = {}) {
      const key = signOptions.key === 'previous' ? previous : current
      if (key === undefined) throw new Error('identity provider: no previous key, call rotate() first')
      const now = Math.floor(Date.now() / 1000)
      const payload: Record<string, unknown> = { iss: issuer, aud: audience, sub: DEFAULTS.subject, iat: now, exp: now + DEFAULTS.lifetimeSeconds, ...claims }
      for (const name of Object.keys(payload)) if (payload[name] === undefined) delete payload[name]
      assertEncodable(payload)
      const signer = createSigner({
        key: key.privatePem,
        algorithm,
        kid: signOptions.kid ?? key.kid,
        // fast-jwt replaces a payload's iat with undefined when noTimestamp is set, and with the
        // payload's own iat otherwise: so "no iat" needs noTimestamp, and "our iat" must not have it.
        noTimestamp: !('iat' in payload),
        ...(signOptions.header === undefined ? {} : { header: signOptions.header as JwtHeader })
      })
      return signer(payload)
    },
    rotate ({ keepPrevious = false } = {}) {
      previous = current
      current = createSigningKey(algorithm)
      published = keepPrevious ? [current, previous] : [current]
    },
    setMode (next, delayMs = DEFAULTS.slowDelayMs) {
      if (!MODES.includes(next)) throw new TypeError(`identity provider: unknown mode ${String(next)}`)
      if (!Number.isFinite(delayMs) || delayMs < 0) throw new TypeError(`identity provider: delayMs must be a non-negative number, got ${delayMs}`)
      mode = next
      slowDelayMs = delayMs
    },
    async close () {
      for (const timer of timers) clearTimeout(timer)
      timers.clear()
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
