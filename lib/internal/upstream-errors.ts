/**
 * The one boundary where transport errors become HTTP answers. Decided by error codes along the
 * `cause` chain (reply-from wraps undici's errors), never by message text.
 */
import type { GatewayErrorCode } from '../errors.js'
import type { UpstreamFailureKind } from './request-facts.js'

const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'
])

/** Map an upstream failure to the gateway's answer: 413 for our body limit, 504 for timeouts, else 502. */
export function classifyUpstreamError (error: unknown): GatewayErrorCode {
  let current: unknown = error
  let answer: GatewayErrorCode = 'GATEWAY_ERR_UPSTREAM_UNAVAILABLE'
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    if (code === 'GATEWAY_ERR_BODY_TOO_LARGE') return 'GATEWAY_ERR_BODY_TOO_LARGE'
    if (typeof code === 'string' && TIMEOUT_CODES.has(code)) answer = 'GATEWAY_ERR_UPSTREAM_TIMEOUT'
    current = (current as { cause?: unknown }).cause
  }
  return answer
}

// Failures before a connection existed (DNS, refused, unreachable, TLS verification).
const CONNECT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'
])

/** The failure's kind for metrics: timed out, could not connect, or broke after connecting. */
export function upstreamFailureKind (error: unknown): UpstreamFailureKind {
  const code = classifyUpstreamError(error)
  if (code === 'GATEWAY_ERR_UPSTREAM_TIMEOUT') return 'timeout'
  const root = rootErrorCode(error)
  return root !== undefined && CONNECT_CODES.has(root) ? 'connect' : 'broken'
}

/** The innermost error code, for logs: it names the failure without an address or a message. */
export function rootErrorCode (error: unknown): string | undefined {
  let code: string | undefined
  let current: unknown = error
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const own = (current as { code?: unknown }).code
    if (typeof own === 'string') code = own
    current = (current as { cause?: unknown }).cause
  }
  return code
}

/**
 * Log serializer for errors on proxied routes: type and code only. Transport messages carry upstream
 * addresses ("connect ECONNREFUSED 10.0.3.7:8001") and stacks carry file paths; neither belongs in
 * a log line that leaves the host.
 */
export function serializeUpstreamError (error: unknown): { type: string, code?: string } {
  const type = error instanceof Error ? error.name : typeof error
  const code = rootErrorCode(error)
  return code === undefined ? { type } : { type, code }
}
