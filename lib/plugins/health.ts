/**
 * health: `/health` (liveness: the process answers) and `/ready` (readiness: this instance should
 * get traffic) for load balancers and Kubernetes probes. Readiness runs the checks other plugins
 * contribute (the rate-limit store, today), each bounded in time. Both routes are
 * public and exempt from rate limits; answers carry no address, no version and no message.
 * (During close() the request guard refuses every request, probes included, with 503.)
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import fp from 'fastify-plugin'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { optionalObject, rejectUnknownKeys } from '../internal/options.js'
import { readinessChecks } from '../internal/readiness.js'

/**
 * Options of the {@link health} plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, health: { path: '/livez', readyPath: '/readyz' } })
 * ```
 */
export interface HealthOptions {
  /** Liveness path. Default `/health`. */
  path?: string
  /** Readiness path. Default `/ready`. */
  readyPath?: string
}

// A check that does not answer in time counts as not ready (its own timeouts are shorter).
const CHECK_TIMEOUT_MS = 2_000

function routePath (value: unknown, path: string, fallback: string): string {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !/^\/[A-Za-z0-9/_.-]*$/.test(value)) throw new InvalidOptionError(path, 'expected a path such as /health')
  return value
}

const healthPlugin: FastifyPluginAsync<HealthOptions> = async function health (fastify, input) {
  const options = optionalObject(input, 'health')
  rejectUnknownKeys(options, ['path', 'readyPath'], 'health')
  const livePath = routePath(options.path, 'health.path', '/health')
  const readyPath = routePath(options.readyPath, 'health.readyPath', '/ready')
  if (livePath === readyPath) throw new InvalidOptionError('health.readyPath', 'must differ from health.path')
  // During close() every request, probes included, is refused with 503 by the request guard (or by
  // Fastify): readiness turns false as the balancer needs it to, with no hook of its own here.
  const config = { gateway: { public: true, rateLimit: false as const } }
  // The checks other plugins add, before or after this one (the map is shared).
  const checksToRun = readinessChecks(fastify)

  fastify.get(livePath, { config }, async function liveness (_request, reply: FastifyReply) {
    return await reply.header('cache-control', 'no-store').send({ status: 'ok' })
  })

  fastify.get(readyPath, { config }, async function readiness (_request, reply: FastifyReply) {
    reply.header('cache-control', 'no-store')
    const checks: Record<string, string> = {}
    let ready = true
    await Promise.all([...checksToRun].map(async ([name, check]) => {
      let timer: NodeJS.Timeout | undefined
      const verdict = await Promise.race([
        check(),
        new Promise<{ ready: false, state: 'timeout' }>((resolve) => { timer = setTimeout(() => resolve({ ready: false, state: 'timeout' }), CHECK_TIMEOUT_MS) })
      ]).catch(() => ({ ready: false, state: 'down' }))
      clearTimeout(timer)
      checks[name] = verdict.state
      ready &&= verdict.ready
    }))
    if (!ready) return sendProblem(reply, 'GATEWAY_ERR_NOT_READY', { detail: Object.entries(checks).map(([name, state]) => `${name}: ${state}`).join(', ') })
    return await reply.send({ status: 'ready', checks })
  })
}

/**
 * Liveness and readiness routes for load balancers and Kubernetes probes.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, rateLimit: { store: redis, onStoreError: 'closed' }, health: {} })
 * // livenessProbe: GET /health → 200 {"status":"ok"}
 * // readinessProbe: GET /ready → 200 {"status":"ready","checks":{"rateLimitStore":"up"}}, or 503 GATEWAY_ERR_NOT_READY
 * ```
 */
export const health = fp(healthPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.health'
})
