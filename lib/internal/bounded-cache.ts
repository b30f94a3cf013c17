/**
 * A Map with a size bound and a per-entry expiry. When full, the oldest insertion is evicted (FIFO,
 * refreshed on set): O(1), no timers, and memory never exceeds `max` entries.
 */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, { value: V, expiresAt: number }>()
  readonly #max: number

  constructor (max: number) {
    this.#max = max
  }

  get size (): number {
    return this.#entries.size
  }

  get (key: K, now = Date.now()): V | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= now) {
      this.#entries.delete(key)
      return undefined
    }
    return entry.value
  }

  set (key: K, value: V, expiresAt: number): void {
    this.#entries.delete(key)
    this.#entries.set(key, { value, expiresAt })
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value as K)
  }

  clear (): void {
    this.#entries.clear()
  }
}
