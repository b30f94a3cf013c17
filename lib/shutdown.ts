/**
 * Graceful shutdown with a deadline. Fastify's `close()` already stops accepting connections,
 * answers new requests on open connections with 503 (`return503OnClosing`) and runs the `onClose`
 * hooks (breakers, upstream pools, timers) once every connection has ended — but it waits for that
 * without limit, and a keep-alive connection whose request was in flight when `close()` began stays
 * open after its response (Node closes idle connections once, at `server.close()`), so a load
 * balancer that pools connections keeps the process alive until its idle timeout.
 */
import type { Server } from 'node:http'
import type { FastifyInstance } from 'fastify'
import { toMilliseconds, type Duration } from './internal/duration.js'
import { optionalObject, rejectUnknownKeys } from './internal/options.js'

/**
 * Options of {@link closeGracefully}.
 *
 * @example
 * ```ts
 * await closeGracefully(app, { deadline: '25s' }) // under Kubernetes' 30 s terminationGracePeriodSeconds
 * ```
 */
export interface CloseGracefullyOptions {
  /** Longest wait for in-flight requests; then every remaining connection is closed. Default 10 s. */
  deadline?: Duration
}

/**
 * What {@link closeGracefully} resolves with.
 *
 * @example
 * ```ts
 * const { forced } = await closeGracefully(app, { deadline: '10s' })
 * process.exit(forced ? 1 : 0)
 * ```
 */
export interface CloseGracefullyResult {
  /** True when the deadline passed and connections still busy were cut off. */
  forced: boolean
}

const DEFAULT_DEADLINE_MS = 10_000
// How often connections that finished their last response are closed while draining.
const IDLE_SWEEP_MS = 50

/**
 * Close `app`: stop accepting, let in-flight requests finish for up to `deadline`, close the
 * connections that turn idle meanwhile, then cut off whatever is left; the `onClose` hooks run once
 * no connection remains. Timers are unref'd and cleared.
 *
 * @example
 * ```ts
 * process.once('SIGTERM', () => {
 *   closeGracefully(app, { deadline: '10s' }).then(({ forced }) => process.exit(forced ? 1 : 0), () => process.exit(1))
 * })
 * ```
 */
export async function closeGracefully (app: FastifyInstance, input?: CloseGracefullyOptions): Promise<CloseGracefullyResult> {
  const options = optionalObject(input, 'closeGracefully')
  rejectUnknownKeys(options, ['deadline'], 'closeGracefully')
  const deadlineMs = options.deadline === undefined ? DEFAULT_DEADLINE_MS : toMilliseconds(options.deadline, 'closeGracefully.deadline')
  // HTTP/2 servers have neither method; Fastify closes their sessions itself.
  const server = app.server as Partial<Pick<Server, 'closeIdleConnections' | 'closeAllConnections'>>
  let forced = false
  const sweep = setInterval(() => { server.closeIdleConnections?.() }, IDLE_SWEEP_MS).unref()
  const deadline = setTimeout(() => {
    forced = true
    server.closeAllConnections?.()
  }, deadlineMs).unref()
  try {
    await app.close()
  } finally {
    clearInterval(sweep)
    clearTimeout(deadline)
  }
  return { forced }
}
