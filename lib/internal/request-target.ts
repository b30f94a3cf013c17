/**
 * The canonical-path rule (SECURITY.md § A, § C): the auth decision, the route match and the path
 * the upstream receives must come from one path. Instead of normalising (which is where every
 * proxy/backend disagreement comes from), any target whose meaning depends on normalisation is
 * refused: the remaining targets read the same to find-my-way, to `new URL`, to the upstream and
 * to the policy.
 */

// RFC 3986 pchar plus "/" — without ";" (Tomcat and Jetty read "/..;/" as "/../") and without
// "\", "#", spaces, control and non-ASCII bytes. Must start with "/": this refuses absolute-form
// ("http://evil/"), authority-form ("evil:443") and asterisk-form ("*") targets.
const PATH_CHARSET = /^\/[A-Za-z0-9\-._~!$&'()*+,=:@/%]*$/

// Inside an otherwise well-formed path:
//  - "//" (read as an authority by some URL parsers, collapsed by others);
//  - "%" not followed by two hex digits;
//  - percent-encoded unreserved characters (%41, %2E, %7E…): find-my-way decodes them before
//    matching, so "/us%65rs" would match "/users" while the raw bytes say otherwise;
//  - encoded "/", "\", NUL, ";", "#", and double encoding (%25 followed by two hex digits);
//  - dot segments "." and "..".
const UNSAFE_IN_PATH = new RegExp([
  '//',
  '%(?![0-9A-Fa-f]{2})',
  '%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DdEe]|5[Ff]|7[Ee])',
  '%(?:2[Ff]|5[Cc]|00|3[Bb]|23|25[0-9A-Fa-f]{2})',
  '(?:^|/)\\.\\.?(?:/|$)'
].join('|'))

// The query never takes part in the path decision, but it is passed on verbatim: refuse bytes a
// strict parser would refuse, and "#", which has no place in a request target.
const UNSAFE_IN_QUERY = /[^\x21-\x7e]|#/

/** True when `target` (the raw request-target of an HTTP/1.1 request line) is unambiguous. */
export function isCanonicalRequestTarget (target: string): boolean {
  const queryStart = target.indexOf('?')
  const path = queryStart === -1 ? target : target.slice(0, queryStart)
  if (!PATH_CHARSET.test(path) || UNSAFE_IN_PATH.test(path)) return false
  return queryStart === -1 || !UNSAFE_IN_QUERY.test(target.slice(queryStart + 1))
}

/** Methods a gateway never forwards: CONNECT would tunnel, TRACE/TRACK echo credentials back. */
export const REFUSED_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'TRACE', 'TRACK'])
