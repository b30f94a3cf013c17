/**
 * The upstream's response headers, as the client gets them: hop-by-hop and `Connection`-nominated
 * headers dropped, headers the gateway owns kept, CORS left to the gateway, and redirects into the
 * upstream mapped back under the service prefix.
 */
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import { connectionTokens, HOP_BY_HOP_HEADERS } from './headers.js'

const HOP_BY_HOP = new Set(HOP_BY_HOP_HEADERS)

/**
 * A redirect into the upstream itself (`http://10.0.3.7:8001/base/users/2`) would hand the client
 * an internal address: map it back under the service prefix, as nginx's `proxy_redirect default`.
 */
function clientLocation (location: string, prefix: string, bases: ReadonlyArray<{ origin: string, path: string }>): string {
  for (const base of bases) {
    for (const start of [base.origin + base.path, base.path]) {
      if (start === '' || !location.startsWith(start)) continue
      const rest = location.slice(start.length)
      if (rest === '' || rest[0] === '/' || rest[0] === '?') return (prefix + rest) || '/'
    }
  }
  return location
}

/** Header names listed in the response's `Connection`, when it lists any. */
function nominatedBy (headers: IncomingHttpHeaders): string[] | undefined {
  const connection = headers.connection
  // `keep-alive` / `close` (nearly every response) name no other header: no list to build.
  return connection === undefined || connection === 'keep-alive' || connection === 'close' ? undefined : connectionTokens(connection)
}

/** True for the upstream's headers the client gets. */
function isPassed (name: string, nominated: string[] | undefined, owned: ReadonlySet<string>, corsOwned: boolean): boolean {
  if (HOP_BY_HOP.has(name) || owned.has(name) || nominated?.includes(name) === true) return false
  // With the cors plugin, the gateway alone decides CORS: an upstream's allow headers would override it.
  return !(corsOwned && name.startsWith('access-control-'))
}

export function copyUpstreamHeaders (headers: IncomingHttpHeaders, reply: FastifyReply<any, any, any, any, any, any, any, any>, prefix: string, bases: ReadonlyArray<{ origin: string, path: string }>, owned: ReadonlySet<string>, corsOwned: boolean): void {
  const nominated = nominatedBy(headers)
  for (const name in headers) {
    if (!isPassed(name, nominated, owned, corsOwned)) continue
    const value = headers[name]
    reply.header(name, name === 'location' && typeof value === 'string' ? clientLocation(value, prefix, bases) : value)
  }
}

/** Takes back what {@link copyUpstreamHeaders} copied, when the gateway answers with a problem instead. */
export function removeUpstreamHeaders (headers: IncomingHttpHeaders, reply: FastifyReply<any, any, any, any, any, any, any, any>, owned: ReadonlySet<string>, corsOwned: boolean): void {
  const nominated = nominatedBy(headers)
  for (const name in headers) if (isPassed(name, nominated, owned, corsOwned)) reply.removeHeader(name)
}
