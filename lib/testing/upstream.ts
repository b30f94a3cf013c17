/**
 * A recording upstream on 127.0.0.1 with scripted faults: what a team needs to test its gateway
 * without a network, and what our own tests use to see exactly what reached the upstream.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { once } from 'node:events'

/**
 * One request as the upstream received it.
 *
 * @example
 * ```ts
 * const users = await createTestUpstream()
 * await app.inject({ url: '/api/v1/users/42', headers: { authorization } })
 * const seen: RecordedRequest | undefined = users.requests.at(-1)
 * assert.equal(seen?.headers['x-consumer-id'], 'alice')
 * ```
 */
export interface RecordedRequest {
  method: string
  /** The raw request-target, exactly as it arrived. */
  url: string
  headers: IncomingHttpHeaders
  /** Header names and values in arrival order, with their original case and duplicates. */
  rawHeaders: string[]
  body: Buffer
  /** True when the connection closed before the whole body arrived. */
  aborted: boolean
}

/**
 * What the upstream does with a request.
 *
 * @example
 * ```ts
 * users.respond(() => ({ status: 503, body: { error: 'maintenance' }, delay: 50 }))
 * users.failNext(2, 'reset')
 * ```
 */
export type UpstreamBehaviour =
  | { status?: number, headers?: Record<string, string | string[]>, body?: string | Buffer | object, delay?: number }
  /** Accept the request and never answer (until the upstream is closed). */
  | 'hang'
  /** Destroy the connection without answering. */
  | 'reset'
  /** Send headers announcing 1,000 bytes, then 100 bytes, then destroy the connection. */
  | 'reset-mid-body'
  /** Send headers and part of the body, then stall without closing. */
  | 'stall-body'
  /** Write these bytes on the socket as the whole response, then close. */
  | { raw: string }

/**
 * A behaviour chosen per request; return undefined for the default 200 JSON echo.
 *
 * @example
 * ```ts
 * const script: UpstreamScript = (request) => request.url.startsWith('/slow') ? 'hang' : undefined
 * users.respond(script)
 * ```
 */
export type UpstreamScript = (request: RecordedRequest) => UpstreamBehaviour | undefined

/**
 * A running test upstream.
 *
 * @example
 * ```ts
 * const users = await createTestUpstream()
 * await app.register(gateway, { auth: false, services: { users: { upstream: users.url, prefix: '/api/v1/users' } } })
 * await app.inject({ url: '/api/v1/users/1' })
 * assert.equal(users.requests[0].url, '/1')
 * await users.close()
 * ```
 */
export interface TestUpstream {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  /** Every request received, in order (including aborted ones, once they end). */
  readonly requests: RecordedRequest[]
  /** TCP connections accepted so far. */
  readonly connections: number
  /** Use `script` for every following request. */
  respond: (script: UpstreamScript) => void
  /** Answer the next `count` requests with `behaviour`, then go back to the script. */
  failNext: (count: number, behaviour: UpstreamBehaviour) => void
  /** Resolve once `count` requests have been recorded (rejects after `timeoutMs`). */
  waitForRequests: (count: number, timeoutMs?: number) => Promise<void>
  close: () => Promise<void>
}

function defaultBehaviour (request: RecordedRequest): UpstreamBehaviour {
  return { status: 200, body: { ok: true, method: request.method, url: request.url } }
}

/**
 * Start a recording upstream on a free loopback port.
 *
 * @example
 * ```ts
 * const upstream = await createTestUpstream()
 * upstream.failNext(1, { status: 503 })
 * // … point a service at upstream.url, call the gateway with app.inject …
 * assert.equal(upstream.requests[0].headers['x-consumer-id'], 'alice')
 * await upstream.close()
 * ```
 */
export async function createTestUpstream (options: { script?: UpstreamScript } = {}): Promise<TestUpstream> {
  const requests: RecordedRequest[] = []
  const sockets = new Set<Socket>()
  const waiters = new Set<() => void>()
  let connections = 0
  let script: UpstreamScript = options.script ?? (() => undefined)
  let failures: { count: number, behaviour: UpstreamBehaviour } | undefined

  function choose (request: RecordedRequest): UpstreamBehaviour {
    if (failures !== undefined && failures.count > 0) {
      failures.count--
      return failures.behaviour
    }
    return script(request) ?? defaultBehaviour(request)
  }

  function record (request: RecordedRequest): void {
    requests.push(request)
    for (const wake of waiters) wake()
  }

  async function answer (behaviour: UpstreamBehaviour, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (behaviour === 'hang') return
    if (behaviour === 'reset') {
      req.socket.destroy()
      return
    }
    if (behaviour === 'reset-mid-body' || behaviour === 'stall-body') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1000' })
      res.write(Buffer.alloc(100, 'x'))
      if (behaviour === 'reset-mid-body') setTimeout(() => req.socket.destroy(), 20).unref()
      return
    }
    if ('raw' in behaviour) {
      req.socket.end(behaviour.raw)
      return
    }
    if (behaviour.delay !== undefined) await new Promise((resolve) => setTimeout(resolve, behaviour.delay).unref())
    if (res.destroyed) return
    const body = behaviour.body === undefined
      ? ''
      : typeof behaviour.body === 'string' || Buffer.isBuffer(behaviour.body) ? behaviour.body : JSON.stringify(behaviour.body)
    const isJson = behaviour.body !== undefined && typeof behaviour.body === 'object' && !Buffer.isBuffer(behaviour.body)
    res.writeHead(behaviour.status ?? 200, { ...(isJson ? { 'content-type': 'application/json' } : {}), ...behaviour.headers })
    res.end(body)
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    let settled = false
    const finish = (aborted: boolean): void => {
      if (settled) return
      settled = true
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
        aborted
      }
      record(recorded)
      if (!aborted) answer(choose(recorded), req, res).catch(() => req.socket.destroy())
    }
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => finish(false))
    req.on('error', () => finish(true))
    req.on('close', () => { if (!req.complete) finish(true) })
  })
  server.on('connection', (socket: Socket) => {
    connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    get connections () { return connections },
    respond (next) { script = next },
    failNext (count, behaviour) { failures = { count, behaviour } },
    async waitForRequests (count, timeoutMs = 5_000) {
      if (requests.length >= count) return
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`upstream saw ${requests.length} of ${count} requests within ${timeoutMs} ms`))
        }, timeoutMs)
        function check (): void {
          if (requests.length < count) return
          clearTimeout(timer)
          waiters.delete(check)
          resolve()
        }
        waiters.add(check)
      })
    },
    async close () {
      for (const socket of sockets) socket.destroy()
      server.close()
      await once(server, 'close')
    }
  }
}
