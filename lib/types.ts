/** Public types shared by the plugins, and the `config.gateway` route option. */
import type { HTTPMethods } from 'fastify'
import type { Duration } from './internal/duration.js'

export type { Duration }

/** Upstream timeouts. One duration applies to both `headers` and `body`. */
export interface GatewayTimeouts {
  /** TCP (and TLS) connect. Default 5 s. */
  connect?: Duration
  /** From the request being sent to the response headers. Default 30 s. */
  headers?: Duration
  /** Between two chunks of the response body. Default 30 s. */
  body?: Duration
}

/** One upstream service: the routes under `prefix` are proxied to `upstream`. */
export interface GatewayServiceOptions {
  /** Base URL of the upstream (`http:` or `https:`), or several, used round-robin. */
  upstream: string | readonly string[]
  /** Path prefix the service answers under, e.g. `/api/v1/users`. */
  prefix: string
  /** Replaces `prefix` in the path sent upstream. Default `''`: the prefix is removed. */
  rewritePrefix?: string
  /** Methods proxied. Default GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS. CONNECT and TRACE never. */
  methods?: readonly HTTPMethods[]
  /** Upstream timeouts: one duration for headers and body, or each (defaults 5 s / 30 s / 30 s). */
  timeout?: Duration | GatewayTimeouts
  /** Largest request body forwarded, in bytes; larger → 413. Default 1 MiB. */
  bodyLimit?: number
  /** Extra CA certificates (PEM) trusted for `https:` upstreams. Certificates are always verified. */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>
  /** Keep-alive connections per upstream target. Default 128. */
  connections?: number
}

/** Per-route gateway policy, declared next to the route in `config.gateway`. */
export interface GatewayRoutePolicy {
  /** The service a proxied route belongs to (set by the proxy plugin on the routes it creates). */
  service?: string
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** fastify-gateway policy for this route. */
    gateway?: GatewayRoutePolicy
  }
}
