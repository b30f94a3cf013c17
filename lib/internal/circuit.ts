/**
 * A circuit breaker's state machine, synchronous: `tryCall()` before a call, `record()` with its
 * outcome. No promise, event or timer per call — the proxy records the outcome of a proxied call
 * when its response closes, and the rolling window advances from the clock as calls are recorded.
 *
 *   closed ──(≥ volumeThreshold calls in the window, failures > threshold %)──▶ open
 *   open ──(resetTimeout)──▶ half-open: one probe; its success closes, its failure reopens.
 */

/** What a call was let through as; REFUSED when the breaker is open (or its one probe is out). */
export type CallTicket = typeof REFUSED | typeof CALL | typeof PROBE
export const REFUSED = 0
const CALL = 1
const PROBE = 2

/** A call that never reached the upstream (client abort, refused body): counted neither way. */
export class NotCountedError extends Error {
  readonly code: string
  constructor (code: string) {
    super(code)
    this.code = code
  }
}

export interface CircuitPolicy {
  readonly errorThresholdPercentage: number
  readonly resetTimeoutMs: number
  readonly volumeThreshold: number
  readonly rollingWindowMs: number
}

export type CircuitState = 'closed' | 'open' | 'half-open'

const BUCKETS = 10

export class Circuit {
  readonly #policy: CircuitPolicy
  readonly #onTransition: (state: CircuitState) => void
  readonly #bucketMs: number
  // The rolling window: calls and failures per bucket of rollingWindow / 10, a ring indexed by time.
  readonly #calls = new Uint32Array(BUCKETS)
  readonly #failures = new Uint32Array(BUCKETS)
  #bucket = 0
  #state: CircuitState = 'closed'
  #probeOut = false
  #openedAt = 0
  #resetTimer: NodeJS.Timeout | undefined
  #shutDown = false

  constructor (policy: CircuitPolicy, onTransition: (state: CircuitState) => void) {
    this.#policy = policy
    this.#onTransition = onTransition
    this.#bucketMs = Math.max(1, Math.floor(policy.rollingWindowMs / BUCKETS))
    this.#bucket = Math.floor(Date.now() / this.#bucketMs)
  }

  get state (): CircuitState {
    return this.#state
  }

  /** Whole seconds until the next probe (at least 1). */
  retryAfterSeconds (): number {
    return Math.max(1, Math.ceil((this.#openedAt + this.#policy.resetTimeoutMs - Date.now()) / 1000))
  }

  /** Whether a call may go ahead: always when closed, never when open, once when half-open. */
  tryCall (): CallTicket {
    if (this.#state === 'closed') return CALL
    if (this.#state === 'open' || this.#probeOut || this.#shutDown) return REFUSED
    this.#probeOut = true
    return PROBE
  }

  /**
   * The outcome of a call let through: `undefined` for success, a NotCountedError for a call that
   * never reached the upstream (the probe then reopens: it proved nothing), any other error a failure.
   */
  record (ticket: CallTicket, failure: Error | undefined): void {
    if (ticket === REFUSED || this.#shutDown) return
    if (ticket === PROBE) {
      this.#probeOut = false
      if (failure === undefined) this.#close()
      else this.#open()
      return
    }
    if (failure instanceof NotCountedError) return
    const slot = this.#advance()
    this.#calls[slot]++
    if (failure === undefined) return
    this.#failures[slot]++
    if (this.#state !== 'closed') return
    let calls = 0
    let failures = 0
    for (let i = 0; i < BUCKETS; i++) {
      calls += this.#calls[i]
      failures += this.#failures[i]
    }
    if (calls >= this.#policy.volumeThreshold && (failures / calls) * 100 > this.#policy.errorThresholdPercentage) this.#open()
  }

  shutdown (): void {
    this.#shutDown = true
    clearTimeout(this.#resetTimer)
  }

  /** Moves the window to now, zeroing the buckets that ended unused; returns the current slot. */
  #advance (): number {
    const bucket = Math.floor(Date.now() / this.#bucketMs)
    if (bucket !== this.#bucket) {
      const stale = Math.min(BUCKETS, bucket - this.#bucket)
      for (let i = 1; i <= stale; i++) {
        const slot = (this.#bucket + i) % BUCKETS
        this.#calls[slot] = 0
        this.#failures[slot] = 0
      }
      this.#bucket = bucket
    }
    return this.#bucket % BUCKETS
  }

  #open (): void {
    this.#state = 'open'
    this.#openedAt = Date.now()
    clearTimeout(this.#resetTimer)
    // Unreferenced: an open breaker must not keep the process alive.
    this.#resetTimer = setTimeout(() => {
      this.#state = 'half-open'
      this.#onTransition('half-open')
    }, this.#policy.resetTimeoutMs).unref()
    this.#onTransition('open')
  }

  #close (): void {
    this.#state = 'closed'
    // A fresh window: the failures that opened the breaker are history once a probe succeeded.
    this.#calls.fill(0)
    this.#failures.fill(0)
    this.#onTransition('closed')
  }
}
