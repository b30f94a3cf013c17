/**
 * @fastify/rate-limit's LocalStore, with one fix: it hands its callback the live LRU entry, and
 * `applyRateLimit` reads it only after an `await` — so requests arriving in the same tick all read
 * the last count and all are refused (a burst of 50 against max 10 gets 0, not 10). Each result is
 * copied at the moment of the increment. (The Redis store returns fresh values already.)
 */
import LocalStore from '@fastify/rate-limit/store/LocalStore.js'

type Counted = { current: number, ttl: number }
type Callback = (error: Error | null, result: Counted | null) => void

interface LocalStoreLike {
  incr: (key: string, cb: Callback, timeWindow: number, max: number) => void
  read: (key: string, cb: Callback, timeWindow: number, max: number) => void
  child: (params: Record<string, unknown>) => LocalStoreLike
}

function snapshot (cb: Callback): Callback {
  return (error, result) => { cb(error, result === null ? null : { current: result.current, ttl: result.ttl }) }
}

class SnapshotStore {
  readonly #store: LocalStoreLike

  constructor (store: LocalStoreLike) {
    this.#store = store
  }

  incr (key: string, cb: Callback, timeWindow: number, max: number): void {
    this.#store.incr(key, snapshot(cb), timeWindow, max)
  }

  read (key: string, cb: Callback, timeWindow: number, max: number): void {
    this.#store.read(key, snapshot(cb), timeWindow, max)
  }

  child (params: Record<string, unknown>): SnapshotStore {
    return new SnapshotStore(this.#store.child(params))
  }
}

/** A store constructor for @fastify/rate-limit's `store` option: counters in memory, `cache` keys per limit (LRU). */
export class MemoryStore extends SnapshotStore {
  constructor (params: { continueExceeding?: boolean, exponentialBackoff?: boolean, cache?: number }) {
    super(new (LocalStore as unknown as new (continueExceeding?: boolean, exponentialBackoff?: boolean, cache?: number) => LocalStoreLike)(params.continueExceeding, params.exponentialBackoff, params.cache))
  }
}
