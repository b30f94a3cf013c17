/**
 * A few keep-alive raw HTTP/1.1 connections over node:net, for suites that send thousands of raw
 * request targets: one request in flight per connection, reconnecting whenever the server closes
 * (every parser error does). Bytes go out verbatim; responses are framed by Content-Length,
 * chunked encoding or the close.
 */
import { connect, type Socket } from 'node:net'

export interface PooledResponse {
  /** Undefined when the connection closed before a status line (or the request timed out). */
  status: number | undefined
  headers: Record<string, string>
  body: string
}

interface Pending {
  request: string
  resolve: (response: PooledResponse) => void
}

/** Length of a complete chunked body at the start of `data`, or -1 when more bytes are needed. */
function chunkedLength (data: Buffer): number {
  let offset = 0
  for (;;) {
    const lineEnd = data.indexOf('\r\n', offset)
    if (lineEnd === -1) return -1
    const size = parseInt(data.subarray(offset, lineEnd).toString('latin1'), 16)
    if (Number.isNaN(size)) return -1
    if (size === 0) {
      const end = data.indexOf('\r\n\r\n', lineEnd)
      return end === -1 ? -1 : end + 4
    }
    offset = lineEnd + 2 + size + 2
    if (offset > data.length) return -1
  }
}

class RawConnection {
  #socket: Socket | undefined
  #buffer = Buffer.alloc(0)
  #pending: Pending | undefined
  #timer: NodeJS.Timeout | undefined
  readonly #port: number
  readonly #timeoutMs: number

  constructor (port: number, timeoutMs: number) {
    this.#port = port
    this.#timeoutMs = timeoutMs
  }

  async send (request: string): Promise<PooledResponse> {
    return await new Promise((resolve) => {
      this.#pending = { request, resolve }
      this.#timer = setTimeout(() => this.#settle(undefined), this.#timeoutMs)
      const socket = this.#socket ?? this.#open()
      socket.write(Buffer.from(request, 'latin1'))
    })
  }

  close (): void {
    this.#socket?.destroy()
  }

  #open (): Socket {
    const socket = connect(this.#port, '127.0.0.1')
    this.#socket = socket
    this.#buffer = Buffer.alloc(0)
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk])
      this.#tryParse(false)
    })
    const closed = (): void => {
      if (this.#socket !== socket) return
      this.#socket = undefined
      this.#tryParse(true)
      this.#settle(undefined)
    }
    socket.on('close', closed)
    socket.on('error', closed)
    return socket
  }

  #tryParse (atClose: boolean): void {
    if (this.#pending === undefined) return
    const headerEnd = this.#buffer.indexOf('\r\n\r\n')
    if (headerEnd === -1) return
    const [statusLine, ...lines] = this.#buffer.subarray(0, headerEnd).toString('latin1').split('\r\n')
    const status = Number(statusLine.split(' ')[1])
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const rest = this.#buffer.subarray(headerEnd + 4)
    if (status >= 100 && status < 200) {
      this.#buffer = rest
      this.#tryParse(atClose)
      return
    }
    let length: number
    let body: string
    if (status === 204 || status === 304) {
      length = 0
      body = ''
    } else if (headers['content-length'] !== undefined) {
      length = Number(headers['content-length'])
      if (rest.length < length) return
      body = rest.subarray(0, length).toString('latin1')
    } else if (headers['transfer-encoding']?.includes('chunked') === true) {
      length = chunkedLength(rest)
      if (length === -1) return
      body = rest.subarray(0, length).toString('latin1')
    } else {
      if (!atClose) return
      length = rest.length
      body = rest.toString('latin1')
    }
    this.#buffer = rest.subarray(length)
    if (headers.connection?.toLowerCase() === 'close') {
      const socket = this.#socket
      this.#socket = undefined
      socket?.destroy()
    }
    this.#settle({ status, headers, body })
  }

  #settle (response: PooledResponse | undefined): void {
    const pending = this.#pending
    if (pending === undefined) return
    this.#pending = undefined
    clearTimeout(this.#timer)
    if (response === undefined) {
      // Closed (or timed out) before a whole response: the connection cannot be reused.
      const socket = this.#socket
      this.#socket = undefined
      socket?.destroy()
    }
    pending.resolve(response ?? { status: undefined, headers: {}, body: '' })
  }
}

/**
 * Send every request over `size` keep-alive connections to 127.0.0.1:`port`; results in input order.
 *
 * @example
 * ```ts
 * const responses = await sendAll(port, targets.map((target) => `GET ${target} HTTP/1.1\r\nHost: gw\r\n\r\n`))
 * ```
 */
export async function sendAll (port: number, requests: readonly string[], { size = 8, timeoutMs = 5_000 } = {}): Promise<PooledResponse[]> {
  const results: PooledResponse[] = new Array(requests.length)
  const connections = Array.from({ length: Math.min(size, requests.length) }, () => new RawConnection(port, timeoutMs))
  let next = 0
  await Promise.all(connections.map(async (connection) => {
    while (next < requests.length) {
      const index = next++
      results[index] = await connection.send(requests[index])
    }
    connection.close()
  }))
  return results
}
