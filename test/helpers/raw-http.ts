/**
 * Raw HTTP/1.1 over node:net, for targets and framings that undici, `new URL` or light-my-request
 * would normalise or refuse before they reach the gateway.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { once } from 'node:events'

export interface RawResponse {
  /** Status code, or undefined when the connection closed (or timed out) before a status line. */
  status: number | undefined
  headers: Record<string, string>
  body: string
  /** True when the response was complete (Content-Length reached, or final chunk seen). */
  complete: boolean
  timedOut: boolean
}

function parse (data: Buffer, timedOut: boolean): RawResponse {
  const text = data.toString('latin1')
  const headerEnd = text.indexOf('\r\n\r\n')
  if (headerEnd === -1) return { status: undefined, headers: {}, body: '', complete: false, timedOut }
  const [statusLine, ...lines] = text.slice(0, headerEnd).split('\r\n')
  const status = Number(statusLine.split(' ')[1])
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    const name = line.slice(0, colon).trim().toLowerCase()
    headers[name] = headers[name] === undefined ? line.slice(colon + 1).trim() : `${headers[name]}, ${line.slice(colon + 1).trim()}`
  }
  let body = text.slice(headerEnd + 4)
  let complete = false
  if (headers['content-length'] !== undefined) {
    complete = Buffer.byteLength(body, 'latin1') >= Number(headers['content-length'])
  } else if (headers['transfer-encoding']?.includes('chunked') === true) {
    complete = /(?:^|\r\n)0\r\n\r\n$/.test(body)
    body = decodeChunked(body)
  } else {
    complete = status === 204 || status === 304
  }
  return { status, headers, body, complete, timedOut }
}

function decodeChunked (text: string): string {
  let out = ''
  let rest = text
  for (;;) {
    const lineEnd = rest.indexOf('\r\n')
    if (lineEnd === -1) return out
    const size = parseInt(rest.slice(0, lineEnd), 16)
    if (Number.isNaN(size) || size === 0) return out
    out += rest.slice(lineEnd + 2, lineEnd + 2 + size)
    rest = rest.slice(lineEnd + 2 + size + 2)
  }
}

/** Send `request` bytes verbatim to 127.0.0.1:`port`; resolve when the response is complete, the peer closes, or after `timeoutMs`. */
export async function rawRequest (port: number, request: string | Buffer, { timeoutMs = 3_000 } = {}): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  return await new Promise<RawResponse>((resolve) => {
    let done = false
    const finish = (timedOut: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve(parse(Buffer.concat(chunks), timedOut))
    }
    const timer = setTimeout(() => finish(true), timeoutMs)
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      if (parse(Buffer.concat(chunks), false).complete) finish(false)
    })
    socket.on('close', () => finish(false))
    socket.on('error', () => finish(false))
    socket.write(request)
  })
}

/** `GET <target> HTTP/1.1` with a Host and `Connection: close`, plus extra header lines. */
export function rawGet (target: string, extraHeaders: string[] = [], method = 'GET'): string {
  return [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...extraHeaders, '', ''].join('\r\n')
}

/** A listener that must never be reached: it counts TCP connections and drops them. */
export async function createEvilListener (): Promise<{ port: number, readonly connections: number, close: () => Promise<void> }> {
  let connections = 0
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    connections++
    sockets.add(socket)
    socket.destroy()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as AddressInfo).port,
    get connections () { return connections },
    async close () {
      server.close()
      await once(server, 'close')
    }
  }
}

/** What {@link rawExchange} saw: the first response, everything the server sent, and whether it hung up. */
export interface RawExchange extends RawResponse {
  /** Everything the server sent, as latin1 text (several responses when requests were pipelined). */
  raw: string
  /** True when the server closed the connection before `timeoutMs`. */
  closedByServer: boolean
  elapsedMs: number
}

/**
 * Send `request` (or its parts, `gapMs` apart, stopping once the server hangs up), then wait until
 * the server closes the connection or `timeoutMs` passes: for cases where "the connection is
 * closed" is part of what must hold, and for slow (drip-fed) clients.
 */
export async function rawExchange (port: number, request: string | Buffer | Array<string | Buffer>, { timeoutMs = 3_000, gapMs = 0 } = {}): Promise<RawExchange> {
  const parts = Array.isArray(request) ? request : [request]
  const socket = connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  const started = Date.now()
  return await new Promise<RawExchange>((resolve) => {
    let done = false
    let drip: NodeJS.Timeout | undefined
    const finish = (closedByServer: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      clearTimeout(drip)
      socket.destroy()
      const data = Buffer.concat(chunks)
      resolve({ ...parse(data, !closedByServer), raw: data.toString('latin1'), closedByServer, elapsedMs: Date.now() - started })
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
    let next = 0
    const writeNext = (): void => {
      if (done || socket.destroyed || next >= parts.length) return
      socket.write(parts[next++])
      if (next < parts.length) drip = setTimeout(writeNext, gapMs)
    }
    socket.once('connect', writeNext)
  })
}
