/** HS256 tokens for tests that use a shared secret (the JWKS suites use the identity provider). */
import { createSigner } from 'fast-jwt'

export const SECRET = 'a-test-secret-that-is-at-least-32-bytes-long'

export function hs256 (claims: Record<string, unknown> = {}, secret: string = SECRET): string {
  const now = Math.floor(Date.now() / 1000)
  const payload: Record<string, unknown> = { sub: 'alice', aud: 'api', iat: now, exp: now + 300, ...claims }
  for (const [key, value] of Object.entries(payload)) if (value === undefined) delete payload[key]
  return createSigner({ key: secret, algorithm: 'HS256', noTimestamp: true })(payload)
}
