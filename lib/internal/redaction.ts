/**
 * Credentials never reach a log line: the request serializer writes URLs with credential query
 * parameters censored, and pino's `redact` removes credential headers wherever a host logs them.
 */
import type { FastifyRequest } from 'fastify'

export const CENSOR = '[REDACTED]'

/** Query parameters that carry credentials by convention (the API-key parameter is added to these). */
export const CREDENTIAL_QUERY_PARAMETERS: readonly string[] = Object.freeze([
  'api_key', 'apikey', 'api-key', 'key', 'access_token', 'id_token', 'refresh_token', 'token', 'code',
  'password', 'secret', 'client_secret', 'signature', 'sig', 'x-api-key'
])

/** Headers that carry credentials (the API-key header is added to these). */
export const CREDENTIAL_HEADERS: readonly string[] = Object.freeze([
  'authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key'
])

/** `url` with the value of every parameter in `names` replaced by {@link CENSOR}. */
export function redactUrl (url: string, names: ReadonlySet<string>): string {
  const queryStart = url.indexOf('?')
  if (queryStart === -1) return url
  const pairs = url.slice(queryStart + 1).split('&')
  let changed = false
  for (let i = 0; i < pairs.length; i++) {
    const equals = pairs[i].indexOf('=')
    const name = equals === -1 ? pairs[i] : pairs[i].slice(0, equals)
    let decoded = name
    try {
      decoded = decodeURIComponent(name.replace(/\+/g, ' '))
    } catch {}
    if (names.has(decoded.toLowerCase())) {
      pairs[i] = `${name}=${CENSOR}`
      changed = true
    }
  }
  return changed ? `${url.slice(0, queryStart)}?${pairs.join('&')}` : url
}

/** Fastify's own `req` serializer, with the URL's credentials censored. */
export function createRequestSerializer (queryParameters: Iterable<string>): (request: FastifyRequest) => Record<string, unknown> {
  const names = new Set([...queryParameters].map((name) => name.toLowerCase()))
  return function redactedRequest (request) {
    return {
      method: request.method,
      url: redactUrl(request.url, names),
      version: request.headers?.['accept-version'],
      host: request.host,
      remoteAddress: request.ip,
      remotePort: request.socket?.remotePort
    }
  }
}

/** pino `redact` paths for every credential header, wherever a host's own log line puts headers. */
export function credentialHeaderPaths (headers: Iterable<string>): string[] {
  const paths: string[] = []
  for (const header of new Set(headers)) {
    const key = /^[A-Za-z_$][\w$]*$/.test(header) ? `.${header}` : `["${header}"]`
    for (const holder of ['req.headers', 'res.headers', 'request.headers', 'reply.headers', 'headers', 'req.raw.headers']) paths.push(holder + key)
  }
  return paths
}
