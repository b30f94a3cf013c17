/**
 * Round robin over a service's targets with passive health: a target that fails `failures` times in
 * a row is ejected for a backoff that doubles with each ejection (capped), and is tried again when
 * it expires — taken back by its first success. Never all at once: when every target is ejected,
 * every target is used.
 */
export interface ResolvedEjection {
  readonly failures: number
  readonly baseMs: number
  readonly maxMs: number
}

export interface BalancedTarget<T> {
  readonly value: T
  /** Report one outcome of a call to this target. */
  report: (ok: boolean) => void
  /** Active health check result: a failed check takes the target out until a check passes. */
  setHealthy: (healthy: boolean) => void
}

interface TargetState<T> extends BalancedTarget<T> {
  consecutiveFailures: number
  ejections: number
  ejectedUntil: number
  healthy: boolean
}

export interface Balancer<T> {
  pick: () => BalancedTarget<T>
  readonly targets: ReadonlyArray<BalancedTarget<T>>
}

export function createBalancer<T> (values: readonly T[], ejection: ResolvedEjection | undefined, usable: (value: T) => boolean = () => true): Balancer<T> {
  const targets: Array<TargetState<T>> = values.map((value) => {
    const target: TargetState<T> = {
      value,
      consecutiveFailures: 0,
      ejections: 0,
      ejectedUntil: 0,
      healthy: true,
      setHealthy (healthy) {
        target.healthy = healthy
      },
      report (ok) {
        if (ejection === undefined) return
        if (ok) {
          target.consecutiveFailures = 0
          target.ejections = 0
          return
        }
        target.consecutiveFailures++
        if (target.consecutiveFailures >= ejection.failures) {
          target.ejectedUntil = Date.now() + Math.min(ejection.maxMs, ejection.baseMs * 2 ** target.ejections)
          target.ejections++
          target.consecutiveFailures = 0
        }
      }
    }
    return target
  })
  let next = 0
  return {
    targets,
    pick (): BalancedTarget<T> {
      const now = Date.now()
      for (let tried = 0; tried < targets.length; tried++) {
        const target = targets[next]
        next = (next + 1) % targets.length
        if (target.healthy && target.ejectedUntil <= now && usable(target.value)) return target
      }
      // Every target is ejected, unhealthy or open: use them all rather than none.
      const target = targets[next]
      next = (next + 1) % targets.length
      return target
    }
  }
}
