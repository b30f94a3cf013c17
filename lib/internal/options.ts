/** Small validators used once, at registration. Each throws GATEWAY_ERR_INVALID_OPTION naming the path. */
import { InvalidOptionError } from '../errors.js'

export function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function optionalObject (value: unknown, path: string): Record<string, unknown> {
  if (value === undefined) return {}
  if (!isPlainObject(value)) throw new InvalidOptionError(path, 'expected an object')
  return value
}

export function rejectUnknownKeys (value: Record<string, unknown>, known: readonly string[], path: string): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new InvalidOptionError(path === '' ? key : `${path}.${key}`, `unknown option (known: ${known.join(', ')})`)
  }
}

export function positiveInteger (value: unknown, path: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    throw new InvalidOptionError(path, 'expected a positive integer')
  }
  return value
}

export function stringList (value: unknown, path: string, fallback: readonly string[] = []): string[] {
  if (value === undefined) return [...fallback]
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string' && item.length > 0)) {
    throw new InvalidOptionError(path, 'expected an array of non-empty strings')
  }
  return [...value]
}

/** An HTTP header name as RFC 9110 token, lower-cased. */
export function headerName (value: unknown, path: string): string {
  if (typeof value !== 'string' || !/^[!#$%&'*+.^`|~0-9A-Za-z-]+$/.test(value)) {
    throw new InvalidOptionError(path, 'expected an HTTP header name')
  }
  return value.toLowerCase()
}
