/**
 * Retries of proxied calls, decided in reply-from's `retryDelay` hook: only idempotent methods
 * without a body, only on errors where the upstream cannot have acted (connection refused or not
 * established) and on the configured statuses, at most `attempts` times with jittered exponential
 * backoff, and within a budget — a token bucket that earns `budget` of a token per request — so a
 * failing upstream never receives more than (1 + budget) × the traffic.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { Readable } from 'node:stream'
import { rootErrorCode } from './upstream-errors.js'

export interface ResolvedRetryPolicy {
  readonly attempts: number
  readonly statuses: ReadonlySet<number>
  readonly budget: number
}

const RETRIED_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS'])
// Errors raised before a request reached the upstream: retrying cannot repeat an action.
const NOT_SENT: ReadonlySet<string> = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH'])
const BASE_DELAY_MS = 25
const MAX_DELAY_MS = 500
const MAX_TOKENS = 10

interface RetryDetails {
  err?: unknown
  req: { method: string, headers?: IncomingHttpHeaders }
  res?: { statusCode: number, stream?: Readable } | null
  attempt: number
}

/** The `retryDelay` hook of one service; `onRequest` earns the budget, once per client request. */
export function createRetryPolicy (policy: ResolvedRetryPolicy): { onRequest: () => void, retryDelay: (details: RetryDetails) => number | null } {
  let tokens = MAX_TOKENS
  return {
    onRequest () {
      tokens = Math.min(MAX_TOKENS, tokens + policy.budget)
    },
    retryDelay ({ err, req, res, attempt }) {
      if (attempt >= policy.attempts || !RETRIED_METHODS.has(req.method)) return null
      if (req.headers?.['content-length'] !== undefined && req.headers['content-length'] !== '0') return null
      const retriable = res != null ? policy.statuses.has(res.statusCode) : NOT_SENT.has(rootErrorCode(err) ?? '')
      if (!retriable || tokens < 1) return null
      tokens -= 1
      // The failed response's body is never read: release its connection before trying again.
      res?.stream?.destroy()
      const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt)
      return ceiling / 2 + Math.random() * (ceiling / 2)
    }
  }
}
