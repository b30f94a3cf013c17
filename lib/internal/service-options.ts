/** Validates the `services` table once, at registration, into frozen, ready-to-use records. */
import type { HTTPMethods } from 'fastify'
import { InvalidOptionError } from '../errors.js'
import type { GatewayRoutePolicy, GatewayServiceOptions } from '../types.js'
import { toMilliseconds } from './duration.js'
import { headerName, isPlainObject, optionalObject, positiveInteger, rejectUnknownKeys, stringList } from './options.js'
import { isCanonicalRequestTarget, REFUSED_METHODS } from './request-target.js'
import type { ResolvedRetryPolicy } from './retry-policy.js'
import type { ResolvedEjection } from './balancer.js'

export const SERVICE_DEFAULTS = Object.freeze({
  methods: Object.freeze(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as HTTPMethods[]),
  timeouts: Object.freeze({ connect: 5_000, headers: 30_000, body: 30_000 }),
  bodyLimit: 1024 * 1024,
  connections: 128
})

const SERVICE_KEYS = ['upstream', 'prefix', 'rewritePrefix', 'methods', 'timeout', 'bodyLimit', 'ca', 'connections', 'maxConcurrent', 'retries', 'ejection', 'fallback', 'healthCheck', 'public', 'auth', 'scopes', 'rateLimit', 'breaker'] as const
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/
// Static path segments only: find-my-way reads ":" and "*" as parameters.
const STATIC_PATH = /^(?:\/[A-Za-z0-9\-._~!$&'()+,=@]+)*$/

export interface UpstreamTarget {
  /** `http://host:port`, no trailing slash. */
  readonly origin: string
  /** Path of the upstream base URL without a trailing slash, `''` for the root. */
  readonly basePath: string
}

export interface ResolvedService {
  readonly name: string
  /** `''` for a service at the root, else `/a/b` (no trailing slash). */
  readonly prefix: string
  readonly rewritePrefix: string
  readonly targets: readonly UpstreamTarget[]
  readonly methods: readonly HTTPMethods[]
  readonly timeouts: Readonly<{ connect: number, headers: number, body: number }>
  readonly bodyLimit: number
  readonly connections: number
  readonly maxConcurrent: number
  readonly retries: ResolvedRetryPolicy | undefined
  readonly ejection: ResolvedEjection | undefined
  readonly healthCheck: Readonly<{ path: string, intervalMs: number, timeoutMs: number }> | undefined
  readonly fallback: Readonly<{ status: number, body: string, headers: Record<string, string> }> | Readonly<{ upstream: UpstreamTarget }> | undefined
  readonly ca: ReadonlyArray<string | Buffer> | undefined
  /** Route policy for the service's routes; the auth plugin validates it like any `config.gateway`. */
  readonly policy: Readonly<GatewayRoutePolicy>
  /** Whether a breaker is declared (validated by the breaker plugin). */
  readonly breakerDeclared: boolean
}

function staticPath (value: unknown, path: string, { allowEmpty }: { allowEmpty: boolean }): string {
  if (typeof value !== 'string') throw new InvalidOptionError(path, 'expected a path string')
  const trimmed = value === '/' ? '' : value
  if ((trimmed === '' && !allowEmpty) || !STATIC_PATH.test(trimmed) || (trimmed !== '' && !isCanonicalRequestTarget(trimmed))) {
    throw new InvalidOptionError(path, 'expected "/segment/…": static segments, no trailing "/", no dot segments, ":" or "*"')
  }
  return trimmed
}

function upstreamTarget (value: unknown, path: string): UpstreamTarget {
  let url: URL
  try {
    url = new URL(String(value))
  } catch {
    throw new InvalidOptionError(path, 'expected an absolute http: or https: URL')
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || typeof value !== 'string') {
    throw new InvalidOptionError(path, 'expected an absolute http: or https: URL')
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new InvalidOptionError(path, 'credentials, query and fragment are not allowed in an upstream URL')
  }
  return Object.freeze({ origin: url.origin, basePath: url.pathname.replace(/\/+$/, '') })
}

function timeouts (value: unknown, path: string): ResolvedService['timeouts'] {
  if (value === undefined) return SERVICE_DEFAULTS.timeouts
  if (!isPlainObject(value)) {
    const ms = toMilliseconds(value, path)
    return Object.freeze({ connect: SERVICE_DEFAULTS.timeouts.connect, headers: ms, body: ms })
  }
  rejectUnknownKeys(value, ['connect', 'headers', 'body'], path)
  const pick = (key: 'connect' | 'headers' | 'body'): number =>
    value[key] === undefined ? SERVICE_DEFAULTS.timeouts[key] : toMilliseconds(value[key], `${path}.${key}`)
  return Object.freeze({ connect: pick('connect'), headers: pick('headers'), body: pick('body') })
}

function methods (value: unknown, path: string): readonly HTTPMethods[] {
  if (value === undefined) return SERVICE_DEFAULTS.methods
  if (!Array.isArray(value) || value.length === 0) throw new InvalidOptionError(path, 'expected a non-empty array of HTTP methods')
  const upper = value.map((method, i) => {
    if (typeof method !== 'string') throw new InvalidOptionError(`${path}[${i}]`, 'expected an HTTP method')
    const name = method.toUpperCase()
    if (REFUSED_METHODS.has(name)) throw new InvalidOptionError(`${path}[${i}]`, `${name} is never proxied`)
    return name as HTTPMethods
  })
  return Object.freeze([...new Set(upper)])
}

function certificates (value: unknown, path: string): ReadonlyArray<string | Buffer> | undefined {
  if (value === undefined) return undefined
  const list = Array.isArray(value) ? value : [value]
  if (list.length === 0 || !list.every((item) => typeof item === 'string' || Buffer.isBuffer(item))) {
    throw new InvalidOptionError(path, 'expected PEM certificates as strings or Buffers')
  }
  return Object.freeze([...list])
}

const RETRY_DEFAULTS = Object.freeze({ attempts: 1, statuses: Object.freeze([502, 503]), budget: 0.2 })

function retries (value: unknown, path: string): ResolvedRetryPolicy | undefined {
  if (value === 0) return undefined
  const options = typeof value === 'number' ? { attempts: value } : optionalObject(value, path)
  if (typeof value !== 'number') rejectUnknownKeys(options, ['attempts', 'statuses', 'budget'], path)
  const attempts = options.attempts === 0 ? 0 : positiveInteger(options.attempts, typeof value === 'number' ? path : `${path}.attempts`, RETRY_DEFAULTS.attempts)
  if (attempts > 5) throw new InvalidOptionError(typeof value === 'number' ? path : `${path}.attempts`, 'at most 5 retries')
  if (attempts === 0) return undefined
  const statuses = options.statuses ?? RETRY_DEFAULTS.statuses
  if (!Array.isArray(statuses) || !statuses.every((status) => Number.isInteger(status) && status >= 500 && status <= 599)) {
    throw new InvalidOptionError(`${path}.statuses`, 'expected 5xx status codes')
  }
  const budget = options.budget ?? RETRY_DEFAULTS.budget
  if (typeof budget !== 'number' || !(budget > 0 && budget <= 1)) throw new InvalidOptionError(`${path}.budget`, 'expected a fraction in (0, 1]')
  return Object.freeze({ attempts, statuses: new Set(statuses as number[]), budget })
}

function ejection (value: unknown, path: string): ResolvedEjection | undefined {
  if (value === false) return undefined
  const options = optionalObject(value, path)
  rejectUnknownKeys(options, ['failures', 'baseTime', 'maxTime'], path)
  const baseMs = options.baseTime === undefined ? 5_000 : toMilliseconds(options.baseTime, `${path}.baseTime`)
  const maxMs = options.maxTime === undefined ? 60_000 : toMilliseconds(options.maxTime, `${path}.maxTime`)
  if (maxMs < baseMs) throw new InvalidOptionError(`${path}.maxTime`, 'must be at least baseTime')
  return Object.freeze({ failures: positiveInteger(options.failures, `${path}.failures`, 3), baseMs, maxMs })
}

function healthCheck (value: unknown, path: string): ResolvedService['healthCheck'] {
  if (value === undefined) return undefined
  const options = optionalObject(value, path)
  rejectUnknownKeys(options, ['path', 'interval', 'timeout'], path)
  const intervalMs = toMilliseconds(options.interval, `${path}.interval`)
  const timeoutMs = options.timeout === undefined ? Math.min(2_000, intervalMs) : toMilliseconds(options.timeout, `${path}.timeout`)
  return Object.freeze({ path: staticPath(options.path, `${path}.path`, { allowEmpty: false }), intervalMs, timeoutMs })
}

function fallback (value: unknown, path: string): ResolvedService['fallback'] {
  if (value === undefined) return undefined
  const options = optionalObject(value, path)
  if (options.upstream !== undefined) {
    rejectUnknownKeys(options, ['upstream'], path)
    return Object.freeze({ upstream: upstreamTarget(options.upstream, `${path}.upstream`) })
  }
  rejectUnknownKeys(options, ['status', 'body', 'headers'], path)
  if (typeof options.status !== 'number' || !Number.isInteger(options.status) || options.status < 200 || options.status > 599) {
    throw new InvalidOptionError(`${path}.status`, 'expected an HTTP status code')
  }
  const headers = optionalObject(options.headers, `${path}.headers`)
  const isJson = typeof options.body === 'object' && options.body !== null
  const resolvedHeaders: Record<string, string> = isJson ? { 'content-type': 'application/json; charset=utf-8' } : {}
  for (const [name, header] of Object.entries(headers)) {
    if (typeof header !== 'string' || !/^[\x20-\x7e]*$/.test(header)) throw new InvalidOptionError(`${path}.headers.${name}`, 'expected a header value')
    resolvedHeaders[headerName(name, `${path}.headers.${name}`)] = header
  }
  return Object.freeze({
    status: options.status,
    body: options.body === undefined ? '' : isJson ? JSON.stringify(options.body) : String(options.body),
    headers: Object.freeze(resolvedHeaders)
  })
}

function resolveService (name: string, input: unknown): ResolvedService {
  const path = `services.${name}`
  if (!SERVICE_NAME.test(name)) throw new InvalidOptionError(path, 'service names are 1–64 letters, digits, "-" or "_"')
  if (!isPlainObject(input)) throw new InvalidOptionError(path, 'expected an object')
  rejectUnknownKeys(input, SERVICE_KEYS, path)
  const upstreams = Array.isArray(input.upstream) ? input.upstream : [input.upstream]
  if (upstreams.length === 0) throw new InvalidOptionError(`${path}.upstream`, 'expected at least one URL')
  return Object.freeze({
    name,
    prefix: staticPath(input.prefix, `${path}.prefix`, { allowEmpty: true }),
    rewritePrefix: input.rewritePrefix === undefined ? '' : staticPath(input.rewritePrefix, `${path}.rewritePrefix`, { allowEmpty: true }),
    targets: Object.freeze(upstreams.map((url, i) => upstreamTarget(url, Array.isArray(input.upstream) ? `${path}.upstream[${i}]` : `${path}.upstream`))),
    methods: methods(input.methods, `${path}.methods`),
    timeouts: timeouts(input.timeout, `${path}.timeout`),
    bodyLimit: positiveInteger(input.bodyLimit, `${path}.bodyLimit`, SERVICE_DEFAULTS.bodyLimit),
    connections: positiveInteger(input.connections, `${path}.connections`, SERVICE_DEFAULTS.connections),
    maxConcurrent: positiveInteger(input.maxConcurrent, `${path}.maxConcurrent`, Number.POSITIVE_INFINITY),
    retries: retries(input.retries, `${path}.retries`),
    ejection: ejection(input.ejection, `${path}.ejection`),
    healthCheck: healthCheck(input.healthCheck, `${path}.healthCheck`),
    fallback: fallback(input.fallback, `${path}.fallback`),
    ca: certificates(input.ca, `${path}.ca`),
    breakerDeclared: input.breaker !== undefined && input.breaker !== false,
    policy: Object.freeze({
      service: name,
      ...(input.public === undefined ? {} : { public: input.public as boolean }),
      ...(input.auth === undefined ? {} : { auth: input.auth as GatewayRoutePolicy['auth'] }),
      ...(input.scopes === undefined ? {} : { scopes: Object.freeze(stringList(input.scopes, `${path}.scopes`)) }),
      ...(input.rateLimit === undefined ? {} : { rateLimit: input.rateLimit as GatewayRoutePolicy['rateLimit'] })
    })
  })
}

/** Validate every service; two services may not share a prefix. */
export function resolveServices (input: unknown): readonly ResolvedService[] {
  const table = optionalObject(input, 'services')
  const services = Object.entries(table).map(([name, service]) => resolveService(name, service as GatewayServiceOptions))
  const seen = new Map<string, string>()
  for (const service of services) {
    const other = seen.get(service.prefix)
    if (other !== undefined) throw new InvalidOptionError(`services.${service.name}.prefix`, `same prefix as service "${other}"`)
    seen.set(service.prefix, service.name)
  }
  return Object.freeze(services)
}
