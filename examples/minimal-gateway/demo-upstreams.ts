/**
 * Stand-ins for the real services, so that `npm run demo` works with nothing else running. Each
 * answer echoes the path and the `x-request-id` the upstream received, to show what the gateway
 * forwarded.
 */
import { createHmac } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'

export interface DemoUpstreams {
  urls: { users: string, orders: string[], payments: string }
  close: () => Promise<void>
}

interface DemoServer { url: string, close: () => Promise<void> }
type Answer = { status?: number, body: Record<string, unknown> }

const USERS = [{ id: '1', name: 'Ada Lovelace' }, { id: '2', name: 'Grace Hopper' }]

async function startServer (name: string, handle: (path: string, req: IncomingMessage) => Answer): Promise<DemoServer> {
  const server = createServer((req, res) => {
    const { pathname, search } = new URL(req.url ?? '/', 'http://upstream')
    const { status = 200, body } = handle(pathname, req)
    const received = { service: name, method: req.method, path: pathname + search, requestId: req.headers['x-request-id'] }
    res.writeHead(status, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ ...received, ...body }))
    req.resume()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close () {
      server.close()
      server.closeAllConnections()
      await once(server, 'close')
    }
  }
}

function users (path: string): Answer {
  if (path === '/') return { body: { users: USERS } }
  const user = USERS.find((candidate) => path === `/${candidate.id}`)
  return user === undefined ? { status: 404, body: { error: 'no such user' } } : { body: { user } }
}

function orders (instance: string): () => Answer {
  return () => ({ body: { instance, orders: [{ id: 'o-1', userId: '1', total: 42 }] } })
}

function payments (): Answer {
  return { body: { payments: [{ id: 'p-1', orderId: 'o-1', status: 'captured' }] } }
}

/** Start the demo users, orders (two instances) and payments services on free loopback ports. */
export async function startDemoUpstreams (): Promise<DemoUpstreams> {
  const servers = await Promise.all([
    startServer('users', users),
    startServer('orders', orders('orders-1')),
    startServer('orders', orders('orders-2')),
    startServer('payments', payments)
  ])
  const [usersServer, orders1, orders2, paymentsServer] = servers
  return {
    urls: { users: usersServer.url, orders: [orders1.url, orders2.url], payments: paymentsServer.url },
    async close () {
      await Promise.all(servers.map(async (server) => { await server.close() }))
    }
  }
}

/**
 * An HS256 token for the demo, signed with the demo's own secret. Your identity provider or your
 * services mint real ones; a gateway never signs tokens.
 */
export function signDemoToken (secret: string, claims: Record<string, unknown>): string {
  const encode = (part: object): string => Buffer.from(JSON.stringify(part)).toString('base64url')
  const unsigned = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode({ iat: Math.floor(Date.now() / 1000), ...claims })}`
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`
}
