/**
 * metrics: Prometheus metrics for the gateway, written in one `onResponse` hook: the request
 * duration by route pattern, and the gateway's own counters, read from the facts the policy plugins
 * record (lib/internal/request-facts.ts); breaker state is read at scrape time; fastify-metrics
 * collects the process metrics. Labels are bounded: the route pattern (or `unmatched`), never a raw
 * URL, a consumer id or a credential.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, FastifyPluginAsync, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import fastifyMetricsModule, { type IMetricsPluginOptions } from 'fastify-metrics'
import promClient, { Counter, Gauge, Histogram, Registry } from '@prometheus-io/client'
import { InvalidOptionError, sendProblem } from '../errors.js'
import { isAllowed, listenForScrapes, resolveExposure } from '../internal/metrics-exposure.js'
import { optionalObject, rejectUnknownKeys } from '../internal/options.js'
import { LocalCounter, LocalHistogram } from '../internal/local-series.js'
import { recordedFacts, routeConfigOf } from '../internal/request-facts.js'
import type { GatewayRoutePolicy } from '../types.js'

/**
 * Who may read the metrics.
 *
 * @example
 * ```ts
 * const exposure: MetricsExposure = { allow: ['10.0.0.0/8'] } // or 'authenticated', 'public', { port: 9464 }, false
 * ```
 */
export type MetricsExposure =
  | 'authenticated'
  | 'public'
  | { allow: readonly string[], port?: never, host?: never }
  | { port: number, host?: string, allow?: never }
  | false

/**
 * Options of the {@link metrics} plugin.
 *
 * @example
 * ```ts
 * await app.register(gateway, { auth, metrics: { expose: { port: 9464, host: '0.0.0.0' }, processMetrics: true } })
 * ```
 */
export interface MetricsOptions {
  /** Registry the metrics are registered in. Default: a new registry for this app. */
  registry?: Registry
  /** Path of the scrape endpoint. Default `/metrics`. */
  path?: string
  /**
   * Where the scrape endpoint is served. `'authenticated'` (default): on the app, and like every
   * route it needs a credential. `'public'`: on the app without a credential. `{ allow }`: on the
   * app without a credential, only for these client addresses or CIDR ranges (`request.ip`, as
   * `trustProxy` sees it). `{ port, host }`: on a separate listener (host default `127.0.0.1`),
   * never on the app's port — the recommended setup. `false`: not served.
   */
  expose?: MetricsExposure
  /** Node.js process metrics (CPU, memory, event loop, GC). Default true. */
  processMetrics?: boolean
  /** Buckets of the duration histograms, in seconds. */
  buckets?: readonly number[]
}

/**
 * What the metrics plugin exposes to the app.
 *
 * @example
 * ```ts
 * await app.ready()
 * console.log(app.gatewayMetrics.address()?.port) // the metrics listener's port
 * const text = await app.gatewayMetrics.registry.metrics()
 * ```
 */
export interface GatewayMetrics {
  readonly registry: Registry
  /** Address of the separate metrics listener once the app is ready; null without one. */
  address: () => AddressInfo | null
}

declare module 'fastify' {
  interface FastifyInstance {
    /** fastify-gateway's metrics (present when the metrics plugin is registered). */
    gatewayMetrics: GatewayMetrics
  }
}

const DEFAULT_BUCKETS = Object.freeze([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30])
const STATUS_CLASS = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx']
// fastify-metrics decorates the instance under the name it is given: a symbol claims no name.
const kFastifyMetrics = Symbol('fastify-gateway.fastify-metrics')
// fastify-metrics ships only `exports.default` (TOOLCHAIN.md): normalise once for ESM and CJS.
const fastifyMetrics = ('default' in fastifyMetricsModule ? fastifyMetricsModule.default : fastifyMetricsModule) as FastifyPluginCallback<Partial<IMetricsPluginOptions>>

function statusClass (status: number): string {
  return STATUS_CLASS[Math.floor(status / 100)] ?? '0xx'
}

function normalizeMetricsOptions (input: unknown) {
  const options = optionalObject(input, 'metrics')
  rejectUnknownKeys(options, ['registry', 'path', 'expose', 'processMetrics', 'buckets'], 'metrics')
  if (options.registry !== undefined && !(typeof options.registry === 'object' && options.registry !== null && typeof (options.registry as Registry).metrics === 'function')) {
    throw new InvalidOptionError('metrics.registry', 'expected a prometheus Registry')
  }
  const path = options.path ?? '/metrics'
  if (typeof path !== 'string' || !/^\/[A-Za-z0-9/_.-]*$/.test(path)) throw new InvalidOptionError('metrics.path', 'expected a path such as /metrics')
  if (options.processMetrics !== undefined && typeof options.processMetrics !== 'boolean') throw new InvalidOptionError('metrics.processMetrics', 'expected a boolean')
  const buckets = options.buckets ?? DEFAULT_BUCKETS
  if (!Array.isArray(buckets) || buckets.length === 0 || !buckets.every((b, i) => typeof b === 'number' && b > 0 && (i === 0 || b > buckets[i - 1]))) {
    throw new InvalidOptionError('metrics.buckets', 'expected increasing positive numbers (seconds)')
  }
  return Object.freeze({
    registry: (options.registry as Registry | undefined) ?? new Registry(),
    path,
    expose: resolveExposure(options.expose),
    processMetrics: options.processMetrics !== false,
    buckets: [...buckets] as number[]
  })
}

interface ResponseSeries { requests: { inc: () => void }, duration: { observe: (seconds: number) => void } }

/** The gateway's own series, registered in `registry`. */
function createGatewayMetrics (fastify: FastifyInstance, registry: Registry, buckets: number[]) {
  const registers = [registry]
  const breakers = (): ReturnType<FastifyInstance['gateway']['breakers']> => fastify.hasDecorator('gateway') ? fastify.gateway.breakers() : []
  const seenTransitions = new Map<object, Record<string, number>>()
  // The per-request series count locally and are added in when scraped (lib/internal/local-series.ts).
  const local = {} as { httpDuration: LocalHistogram, requests: LocalCounter, upstreamDuration: LocalHistogram }
  const httpDuration = new Histogram({ name: 'http_request_duration_seconds', help: 'Request duration, from arrival to the end of the response, by route pattern', labelNames: ['method', 'route', 'status_code'], buckets, registers, collect () { local.httpDuration.flush() } })
  const requests = new Counter({ name: 'gateway_requests_total', help: 'Requests answered, by service, route pattern, method and status class', labelNames: ['service', 'route', 'method', 'status_class'], registers, collect () { local.requests.flush() } })
  const upstreamDuration = new Histogram({ name: 'gateway_upstream_duration_seconds', help: 'From the upstream call to its response headers (or its failure)', labelNames: ['service', 'status_class'], buckets, registers, collect () { local.upstreamDuration.flush() } })
  local.httpDuration = new LocalHistogram(httpDuration, buckets)
  local.requests = new LocalCounter(requests)
  local.upstreamDuration = new LocalHistogram(upstreamDuration, buckets)
  return {
    httpDuration: local.httpDuration,
    requests: local.requests,
    upstreamDuration: local.upstreamDuration,
    upstreamErrors: new Counter({ name: 'gateway_upstream_errors_total', help: 'Upstream calls that failed or were refused before the call (circuit_open, busy)', labelNames: ['service', 'kind'], registers }),
    rateLimited: new Counter({ name: 'gateway_rate_limited_total', help: 'Requests refused with 429, by the limit that refused them', labelNames: ['limit'], registers }),
    storeErrors: new Counter({ name: 'gateway_rate_limit_store_errors_total', help: 'Rate-limit store calls that failed or timed out (the failure policy applied)', registers }),
    authFailures: new Counter({ name: 'gateway_auth_failures_total', help: 'Requests refused by auth (401, 403, 503), by reason', labelNames: ['reason'], registers }),
    circuitState: new Gauge({
      name: 'gateway_circuit_state',
      help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open',
      labelNames: ['service', 'target'],
      registers,
      collect () {
        for (const breaker of breakers()) {
          this.set({ service: breaker.name, target: breaker.target === undefined ? '' : String(breaker.target) }, breaker.state === 'open' ? 2 : breaker.state === 'half-open' ? 1 : 0)
        }
      }
    }),
    circuitTransitions: new Counter({
      name: 'gateway_circuit_transitions_total',
      help: 'Circuit breaker state changes, by the state entered',
      labelNames: ['service', 'target', 'to'],
      registers,
      collect () {
        // The breaker counts its own transitions; add what happened since the last scrape.
        for (const breaker of breakers()) {
          const seen = seenTransitions.get(breaker) ?? { open: 0, 'half-open': 0, closed: 0 }
          for (const to of ['open', 'half-open', 'closed'] as const) {
            const delta = breaker.transitions[to] - seen[to]
            if (delta > 0) this.inc({ service: breaker.name, target: breaker.target === undefined ? '' : String(breaker.target), to }, delta)
            seen[to] = breaker.transitions[to]
          }
          seenTransitions.set(breaker, seen)
        }
      }
    })
  }
}

const metricsPlugin: FastifyPluginAsync<MetricsOptions> = async function metrics (fastify, input) {
  const { registry, path, expose, processMetrics, buckets } = normalizeMetricsOptions(input)
  // Process metrics only: its route timing (an onRequest hook, a WeakMap and labels hashed on every
  // request) cost more than the rest of this plugin together; the duration comes from Fastify's
  // own start time (reply.elapsedTime) in the one hook below (docs/design.md § v).
  await fastify.register(fastifyMetrics, {
    name: kFastifyMetrics as never,
    endpoint: null,
    promClient,
    defaultMetrics: { enabled: processMetrics, register: registry },
    routeMetrics: { enabled: false }
  })
  const series = createGatewayMetrics(fastify, registry, buckets)
  // Children by route (its config object), method and status: bounded (routes × methods ×
  // statuses), found without building a key string per request.
  const perRoute = new WeakMap<object, { route: string, service: string, byMethod: Map<string, Map<number, ResponseSeries>> }>()
  // By service, then status class: both strings come from configuration and constants, so their
  // hashes are cached (a key built per request would be hashed anew every time).
  const upstreamTimers = new Map<string, Map<string, { observe: (seconds: number) => void }>>()

  fastify.addHook('onResponse', function countResponse (request: FastifyRequest, reply: FastifyReply, done) {
    const config = routeConfigOf(request)
    let routeSeries = perRoute.get(config)
    if (routeSeries === undefined) {
      routeSeries = { route: config.url ?? 'unmatched', service: config.gateway?.service ?? '', byMethod: new Map() }
      perRoute.set(config, routeSeries)
    }
    const { route, service } = routeSeries
    const method = request.method
    const status = reply.statusCode
    let byStatus = routeSeries.byMethod.get(method)
    if (byStatus === undefined) {
      byStatus = new Map()
      routeSeries.byMethod.set(method, byStatus)
    }
    let children = byStatus.get(status)
    if (children === undefined) {
      children = {
        requests: series.requests.child({ service, route, method, status_class: statusClass(status) }),
        duration: series.httpDuration.child({ method, route, status_code: String(status) })
      }
      byStatus.set(status, children)
    }
    children.requests.inc()
    children.duration.observe(reply.elapsedTime / 1000)
    const facts = recordedFacts(request)
    if (facts !== undefined) {
      if (facts.upstreamMs !== undefined) {
        const upstreamClass = facts.upstreamStatus === undefined ? 'error' : statusClass(facts.upstreamStatus)
        let byClass = upstreamTimers.get(service)
        if (byClass === undefined) {
          byClass = new Map()
          upstreamTimers.set(service, byClass)
        }
        let timer = byClass.get(upstreamClass)
        if (timer === undefined) {
          timer = series.upstreamDuration.child({ service, status_class: upstreamClass })
          byClass.set(upstreamClass, timer)
        }
        timer.observe(facts.upstreamMs / 1000)
      }
      if (facts.upstreamFailure !== undefined) series.upstreamErrors.inc({ service, kind: facts.upstreamFailure })
      if (facts.rateLimited !== undefined) series.rateLimited.inc({ limit: facts.rateLimited })
      if (facts.storeError === true) series.storeErrors.inc()
      if (facts.authFailure !== undefined) series.authFailures.inc({ reason: facts.authFailure })
    }
    done()
  })

  let listener: Server | undefined
  if (expose === 'authenticated' || expose === 'public' || (typeof expose === 'object' && 'allow' in expose)) {
    const allow = typeof expose === 'object' ? expose.allow : undefined
    // 'authenticated' declares the auth it needs, so a gateway without auth refuses it at boot. The
    // allowlisted scraper is trusted and exempt from limits; anyone else spends their own quota.
    const gateway: GatewayRoutePolicy = expose === 'authenticated' ? { auth: 'required' } : allow === undefined ? { public: true } : { public: true, rateLimit: false }
    fastify.get(path, { config: { gateway }, exposeHeadRoute: false }, async function scrape (request, reply) {
      if (allow !== undefined && !isAllowed(allow, request.ip)) return sendProblem(reply, 'GATEWAY_ERR_FORBIDDEN')
      return await reply.type(registry.contentType).send(await registry.metrics())
    })
    if (expose === 'authenticated') {
      fastify.addHook('onReady', function requireAuth (done) {
        done(fastify.hasPlugin('fastify-gateway.auth')
          ? undefined
          : new InvalidOptionError('metrics.expose', "'authenticated' needs the auth plugin; without auth use 'public', { allow } or { port }"))
      })
    }
  } else if (expose !== false) {
    fastify.addHook('onReady', async function openMetricsListener () {
      listener = await listenForScrapes(registry, path, expose.port, expose.host)
    })
  }
  fastify.addHook('onClose', async function closeMetricsListener () {
    if (listener === undefined) return
    listener.closeAllConnections()
    await new Promise((resolve) => listener?.close(resolve))
  })

  fastify.decorate('gatewayMetrics', Object.freeze({
    registry,
    address: () => (listener?.address() as AddressInfo | null | undefined) ?? null
  }))
}

/**
 * Prometheus metrics: request durations by route pattern, the gateway's counters (requests, upstream
 * latency and errors, 429s, store errors, auth failures, breaker state) and process metrics.
 *
 * @example
 * ```ts
 * await app.register(gateway, {
 *   auth: { jwt: { issuer: 'https://id.example.com/', audience: 'orders-api' } },
 *   metrics: { expose: { port: 9464 } }, // scraped on 127.0.0.1:9464/metrics, not on the public port
 *   services
 * })
 * ```
 */
export const metrics = fp(metricsPlugin, {
  fastify: '5.x',
  name: 'fastify-gateway.metrics'
})
