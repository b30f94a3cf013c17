/**
 * Per-request series, counted in plain numbers and handed to the registry at scrape time. A child
 * of a @prometheus-io/client Histogram or Counter re-validates and re-hashes its labels on every
 * `observe()`/`inc()` (about a microsecond each in the full-policy profile); these add to a few
 * numbers per label set, and the metric's `collect()` (run by the registry before it formats the
 * series) adds them into it. The exposition is the library's own, unchanged.
 */
import type { Counter, Histogram } from '@prometheus-io/client'

// The series are created with label names; the generic parameter is not worth threading through.
type AnyHistogram = Histogram<string>
type AnyCounter = Counter<string>

type Labels = Record<string, string>

interface HistogramEntry { bucketValues: Record<number, number>, sum: number, count: number }
interface HistogramStore { entry: (labels: Labels) => HistogramEntry | undefined }

/** Observations of one label set, since the last scrape. */
class LocalObservations {
  readonly labels: Labels
  readonly counts: Float64Array
  sum = 0
  count = 0
  readonly #upperBounds: readonly number[]

  constructor (labels: Labels, upperBounds: readonly number[]) {
    this.labels = labels
    this.#upperBounds = upperBounds
    this.counts = new Float64Array(upperBounds.length)
  }

  observe (value: number): void {
    const bounds = this.#upperBounds
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]) {
        this.counts[i]++
        break
      }
    }
    this.sum += value
    this.count++
  }
}

/** A histogram whose children observe locally; `flush()` belongs in the histogram's `collect()`. */
export class LocalHistogram {
  readonly #histogram: AnyHistogram
  readonly #upperBounds: readonly number[]
  readonly #children: LocalObservations[] = []

  constructor (histogram: AnyHistogram, upperBounds: readonly number[]) {
    this.#histogram = histogram
    this.#upperBounds = upperBounds
  }

  /** A child for one label set; keep it (children are never removed: label sets are bounded). */
  child (labels: Labels): { observe: (seconds: number) => void } {
    const child = new LocalObservations(labels, this.#upperBounds)
    this.#children.push(child)
    return child
  }

  flush (): void {
    const store = (this.#histogram as unknown as { store?: Partial<HistogramStore> }).store
    for (const child of this.#children) {
      if (child.count === 0) continue
      let entry = store?.entry?.(child.labels)
      if (entry === undefined) {
        this.#histogram.zero(child.labels)
        entry = store?.entry?.(child.labels)
      }
      if (entry === undefined) throw new Error('@prometheus-io/client Histogram without a label store: update lib/internal/local-series.ts')
      for (let i = 0; i < this.#upperBounds.length; i++) entry.bucketValues[this.#upperBounds[i]] += child.counts[i]
      entry.sum += child.sum
      entry.count += child.count
      child.counts.fill(0)
      child.sum = 0
      child.count = 0
    }
  }
}

/** A counter whose children count locally; `flush()` belongs in the counter's `collect()`. */
export class LocalCounter {
  readonly #counter: AnyCounter
  readonly #children: Array<{ labels: Labels, count: number, inc: () => void }> = []

  constructor (counter: AnyCounter) {
    this.#counter = counter
  }

  child (labels: Labels): { inc: () => void } {
    const child = { labels, count: 0, inc () { child.count++ } }
    this.#children.push(child)
    return child
  }

  flush (): void {
    for (const child of this.#children) {
      if (child.count === 0) continue
      this.#counter.inc(child.labels, child.count)
      child.count = 0
    }
  }
}
