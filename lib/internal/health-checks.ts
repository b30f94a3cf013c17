/** Active health checks of a service's targets, on the service's own undici Agent. */
import type { Agent } from 'undici'
import type { Balancer, BalancedTarget } from './balancer.js'

/** GETs `check.path` on every target each interval; the result decides whether the target gets traffic. */
export function startHealthChecks (balancer: Balancer<{ origin: string }>, agent: Agent, check: { path: string, intervalMs: number, timeoutMs: number }): NodeJS.Timeout {
  const probe = (target: BalancedTarget<{ origin: string }>): void => {
    agent.request({ origin: target.value.origin, path: check.path, method: 'GET', headersTimeout: check.timeoutMs, bodyTimeout: check.timeoutMs, signal: AbortSignal.timeout(check.timeoutMs) })
      .then(async (response) => {
        await response.body.dump()
        target.setHealthy(response.statusCode >= 200 && response.statusCode < 300)
      }, () => { target.setHealthy(false) })
  }
  const timer = setInterval(() => { for (const target of balancer.targets) probe(target) }, check.intervalMs)
  timer.unref()
  for (const target of balancer.targets) probe(target)
  return timer
}
