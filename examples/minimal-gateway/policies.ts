/**
 * The team's own policies: plain Fastify hooks, attached to routes next to the gateway's own
 * `config.gateway` policy. They run after the gateway's auth and rate limits (route-level hooks run
 * after instance-level ones), so `request.consumer` is already verified here. policy.test.ts shows
 * how to unit-test them.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
// In your own project: import { sendProblem } from 'fastify-gateway'
import { sendProblem } from '../../lib/index.js'

/** The header naming the tenant a request acts for. */
export const TENANT_HEADER = 'x-tenant'
const TENANT = /^[a-z0-9][a-z0-9-]{0,62}$/

/**
 * A route-level `onRequest` hook: the request must name its tenant in `x-tenant` (400 otherwise),
 * and a consumer bound to a tenant (a `tenant` claim in its JWT or API-key record) may only name
 * its own (403 otherwise). Answers with the gateway's problem+json, so clients see one error shape.
 *
 * @example
 * ```ts
 * app.get('/api/v1/reports/:name', { onRequest: requireTenant }, handler)
 * ```
 */
export async function requireTenant (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
  const tenant = request.headers[TENANT_HEADER]
  // A repeated header arrives as an array: refuse it rather than pick one.
  if (typeof tenant !== 'string' || !TENANT.test(tenant)) {
    return sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST', { detail: `${TENANT_HEADER} must name a tenant` })
  }
  const bound = request.consumer?.claims.tenant
  if (bound !== undefined && bound !== tenant) {
    return sendProblem(reply, 'GATEWAY_ERR_FORBIDDEN', { detail: 'this credential belongs to another tenant' })
  }
}
