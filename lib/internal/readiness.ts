/**
 * Readiness checks that plugins contribute and the health plugin runs: each says whether this
 * instance should get traffic. Kept on the instance under a symbol, shared by every plugin that
 * registers in the same context, so neither side depends on the other's registration order.
 */
import type { FastifyInstance } from 'fastify'

/** One dependency's verdict: `ready: false` takes the instance out of the load balancer. */
export interface ReadinessVerdict {
  ready: boolean
  /** A fixed, short word for the probe's body (`up`, `down`, `degraded`); never an address or a message. */
  state: string
}

export type ReadinessCheck = () => Promise<ReadinessVerdict>

const kReadinessChecks = Symbol.for('fastify-gateway.readiness-checks')
type WithChecks = FastifyInstance & { [kReadinessChecks]?: Map<string, ReadinessCheck> }

function checksOf (fastify: FastifyInstance): Map<string, ReadinessCheck> {
  const instance = fastify as WithChecks
  if (!fastify.hasDecorator(kReadinessChecks)) fastify.decorate(kReadinessChecks, new Map<string, ReadinessCheck>())
  return instance[kReadinessChecks] as Map<string, ReadinessCheck>
}

export function addReadinessCheck (fastify: FastifyInstance, name: string, check: ReadinessCheck): void {
  checksOf(fastify).set(name, check)
}

export function readinessChecks (fastify: FastifyInstance): ReadonlyMap<string, ReadinessCheck> {
  return checksOf(fastify)
}
