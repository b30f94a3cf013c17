/**
 * What must never leave the gateway in an error body or a metric label (SECURITY.md § K): checks
 * shared by test/security/errors-logs-metrics.test.ts. Substring and pattern searches only — never
 * an assertion on a title or message.
 */

/** A leak pattern: a literal substring, or a regular expression. */
export type Leak = string | RegExp

/** Stacks, file paths and library internals, whatever the request was. */
export const INTERNALS: readonly Leak[] = [
  /\n\s*at /, // a V8 stack frame
  /\bat [^"]*:\d+:\d+/, // "at fn (file:line:col)", even on one line
  /\.[cm]?[jt]s:\d+/, // file.ts:12
  /file:\/\//,
  /node_modules/,
  /\/(?:home|work|srv|usr|tmp|var|opt)\//,
  /"stack"|"cause"|"message"|"err"/,
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|UND_ERR|HPE_|FST_|FAST_JWT|ioredis|redis|opossum|undici/i
]

/** The leaks among `patterns` found in `text`, for one readable assertion (`t.same(found, [])`). */
export function leaksIn (text: string, patterns: readonly Leak[]): string[] {
  return patterns
    .filter((pattern) => typeof pattern === 'string' ? pattern !== '' && text.includes(pattern) : pattern.test(text))
    .map(String)
}

/** Patterns naming an address: the bare loopback host, and `:port` of every port given. */
export function addressLeaks (ports: readonly number[]): Leak[] {
  return ['127.0.0.1', 'localhost', '[::1]', ...ports.map((port) => new RegExp(`:${port}(?!\\d)`))]
}

/** One exposition-format sample: its name and labels. */
export interface Sample {
  name: string
  labels: Record<string, string>
}

/** Every sample line of a Prometheus text scrape (comments skipped). */
export function samplesOf (text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const brace = line.indexOf('{')
    const space = line.lastIndexOf(' ')
    const name = brace === -1 ? line.slice(0, space) : line.slice(0, brace)
    const labels: Record<string, string> = {}
    if (brace !== -1) {
      const body = line.slice(brace + 1, line.lastIndexOf('}'))
      for (const match of body.matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[match[1]] = match[2]
    }
    samples.push({ name, labels })
  }
  return samples
}

/** The series of a scrape: one key per name and label set (histogram buckets included). */
export function seriesOf (text: string): Set<string> {
  return new Set(samplesOf(text).map(({ name, labels }) => `${name}${JSON.stringify(Object.entries(labels).sort())}`))
}
