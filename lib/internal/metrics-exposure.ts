/**
 * Where the metrics are served: the `expose` option resolved once (an allowlist compiled into a
 * BlockList), and the separate listener that serves nothing but the metrics path.
 */
import { createServer, type Server } from 'node:http'
import { BlockList, isIP } from 'node:net'
import type { Registry } from '@prometheus-io/client'
import { InvalidOptionError } from '../errors.js'
import { isPlainObject, rejectUnknownKeys } from './options.js'

export type ResolvedExposure = 'authenticated' | 'public' | false | { allow: BlockList } | { port: number, host: string }

export function resolveExposure (value: unknown): ResolvedExposure {
  if (value === undefined) return 'authenticated'
  if (value === 'authenticated' || value === 'public' || value === false) return value
  if (!isPlainObject(value)) throw new InvalidOptionError('metrics.expose', "expected 'authenticated', 'public', { allow }, { port, host } or false")
  if (value.allow !== undefined) {
    rejectUnknownKeys(value, ['allow'], 'metrics.expose')
    if (!Array.isArray(value.allow) || value.allow.length === 0) throw new InvalidOptionError('metrics.expose.allow', 'expected a non-empty array of addresses or CIDR ranges')
    const list = new BlockList()
    value.allow.forEach((entry: unknown, i) => {
      const [address, bits, extra] = typeof entry === 'string' ? entry.split('/') : []
      const family = isIP(address ?? '')
      const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits)
      if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32)) {
        throw new InvalidOptionError(`metrics.expose.allow[${i}]`, 'expected an IP address or CIDR range')
      }
      list.addSubnet(address as string, prefix, family === 6 ? 'ipv6' : 'ipv4')
    })
    return { allow: list }
  }
  rejectUnknownKeys(value, ['port', 'host'], 'metrics.expose')
  if (!Number.isInteger(value.port) || (value.port as number) < 0 || (value.port as number) > 65535) throw new InvalidOptionError('metrics.expose.port', 'expected a port number')
  if (value.host !== undefined && (typeof value.host !== 'string' || value.host === '')) throw new InvalidOptionError('metrics.expose.host', 'expected a host name or address')
  return { port: value.port as number, host: (value.host as string | undefined) ?? '127.0.0.1' }
}

/** A separate listener that serves only `path`: the metrics never share the app's port. */
export async function listenForScrapes (registry: Registry, path: string, port: number, host: string): Promise<Server> {
  const server = createServer((request, response) => {
    const url = request.url ?? ''
    const target = url.includes('?') ? url.slice(0, url.indexOf('?')) : url
    if ((request.method !== 'GET' && request.method !== 'HEAD') || target !== path) {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n')
      return
    }
    registry.metrics().then((text) => {
      response.writeHead(200, { 'content-type': registry.contentType }).end(request.method === 'HEAD' ? undefined : text)
    }, () => {
      response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics unavailable\n')
    })
  })
  // Bounded like the app: a slow scraper cannot hold a socket open.
  server.requestTimeout = 10_000
  server.headersTimeout = 10_000
  server.keepAliveTimeout = 5_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port, host }, () => { server.off('error', reject); resolve() })
  })
  return server
}

/** Whether `ip` (IPv4-mapped IPv6 read as IPv4) is in the allowlist. */
export function isAllowed (allow: BlockList, ip: string): boolean {
  const address: string = ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip
  const family = isIP(address)
  return family !== 0 && allow.check(address, family === 6 ? 'ipv6' : 'ipv4')
}
