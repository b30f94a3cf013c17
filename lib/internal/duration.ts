import { InvalidOptionError } from '../errors.js'

/**
 * Milliseconds as a number, or a string such as `'500ms'`, `'30s'`, `'1m'`, `'1h'`.
 *
 * @example
 * ```ts
 * const timeout: Duration = '10s' // or 10_000, '500ms', '1m', '1h'
 * ```
 */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h'}`

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/

/** Parse a duration option once, at registration. `path` names the option in the error. */
export function toMilliseconds (value: unknown, path: string, { allowZero = false } = {}): number {
  let ms: number | undefined
  if (typeof value === 'number') {
    ms = value
  } else if (typeof value === 'string') {
    const match = DURATION.exec(value)
    if (match !== null) ms = Math.round(Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS])
  }
  if (ms === undefined || !Number.isFinite(ms) || ms < 0 || (ms === 0 && !allowZero)) {
    throw new InvalidOptionError(path, 'expected a positive duration in milliseconds or a string like "30s"')
  }
  return ms
}
