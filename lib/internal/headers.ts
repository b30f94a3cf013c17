/** Header rules shared by the request guard and the proxy (RFC 9110 § 7.6.1). */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { Http2ServerRequest } from 'node:http2'

/** Connection-specific headers: meaningful for one hop only, never forwarded in either direction. */
export const HOP_BY_HOP_HEADERS: readonly string[] = [
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection',
  'te', 'trailer', 'transfer-encoding', 'upgrade'
]

/**
 * Node answers `Expect: 100-continue` itself and leaves the header in place; undici refuses to
 * send it (UND_ERR_NOT_SUPPORTED), which would look like an upstream failure.
 */
export const CONSUMED_BY_GATEWAY: readonly string[] = ['expect']

/** Forwarding headers a client could forge; the proxy replaces them with what the gateway saw. */
export const FORWARDING_HEADERS: readonly string[] = [
  'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port',
  'x-forwarded-prefix', 'x-real-ip'
]

/** Headers only the gateway may set; every client-sent copy is removed on arrival. */
export const DEFAULT_IDENTITY_HEADERS: readonly string[] = ['x-consumer-id', 'x-consumer-scopes']

// The parser has already framed the message with these; dropping them from the header object would
// only make later readers disagree with the bytes on the wire.
const FRAMING_HEADERS: ReadonlySet<string> = new Set(['host', 'content-length', 'transfer-encoding'])

/** Lower-cased header names listed in a `Connection` header value (RFC 9110 § 7.6.1). */
export function connectionTokens (value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const joined = Array.isArray(value) ? value.join(',') : value
  const tokens: string[] = []
  for (const part of joined.split(',')) {
    const token = part.trim().toLowerCase()
    if (token !== '') tokens.push(token)
  }
  return tokens
}

/**
 * Remove every header named in `Connection` (except the options `close`/`keep-alive`) and reduce
 * `Connection` to those options. Done on arrival, so a client cannot name a header the gateway
 * adds later (`Connection: close, x-consumer-id`) and have the proxy strip the gateway's own copy.
 */
export function dropConnectionNominated (headers: IncomingHttpHeaders): void {
  // What nearly every client sends names no header: nothing to split, drop or rejoin.
  if (headers.connection === 'keep-alive' || headers.connection === 'close') return
  const tokens = connectionTokens(headers.connection)
  const kept: string[] = []
  for (const token of tokens) {
    if (token === 'close' || token === 'keep-alive') kept.push(token)
    else if (!FRAMING_HEADERS.has(token)) delete headers[token]
  }
  if (kept.length === 0) delete headers.connection
  else headers.connection = kept.join(', ')
}

/**
 * Removes the headers in `names` from a request. When there are some (the credential of every
 * authenticated request), the others are copied into a new object instead: a `delete` of any but
 * the last-added property turns V8's header object into a slow dictionary, which every later
 * reader pays for (reply-from's copy, our header walks). `rawHeaders` is the wire, left as is.
 * An HTTP/2 request's `headers` has no setter: there they are deleted.
 */
export function removeRequestHeaders (request: IncomingMessage | Http2ServerRequest, names: ReadonlySet<string>): void {
  const headers = request.headers
  if (request.httpVersionMajor !== 1) {
    for (const name in headers) if (names.has(name)) delete headers[name]
    return
  }
  let found = false
  for (const name in headers) {
    if (names.has(name)) {
      found = true
      break
    }
  }
  if (!found) return
  const kept: IncomingHttpHeaders = {}
  for (const name in headers) if (!names.has(name)) kept[name] = headers[name]
  ;(request as IncomingMessage).headers = kept
}

/**
 * `x-consumer-id` → also `x_consumer-id`, `x-consumer_id`, `x_consumer_id`: CGI-style upstreams
 * (and nginx with `underscores_in_headers`) read all of them as one variable. Undefined when a name
 * has more than six separators (2⁶ spellings).
 */
export function separatorSpellings (name: string): string[] | undefined {
  let spellings = ['']
  for (const char of name) {
    const options = char === '-' || char === '_' ? ['-', '_'] : [char]
    spellings = spellings.flatMap((prefix) => options.map((option) => prefix + option))
    if (spellings.length > 64) return undefined
  }
  return spellings
}

/** Names that can never be identity headers: framing, hop-by-hop, forwarding, credentials. */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  'host', 'content-length', 'content-type', 'transfer-encoding', 'authorization', 'cookie', 'x-api-key', 'x-request-id',
  'traceparent', 'tracestate', 'expect', ...HOP_BY_HOP_HEADERS, ...FORWARDING_HEADERS
])
