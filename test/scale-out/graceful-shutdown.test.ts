// Graceful shutdown (issue #10): closeGracefully() stops accepting, lets a proxied request in flight
// finish, refuses new work, closes connections that turn idle (so close() does not wait for a
// client's keep-alive), cuts off what is left at the deadline; the starter does this on SIGTERM.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { Agent, request } from 'undici'
import { closeGracefully, gateway, gatewayServerOptions } from '../../lib/index.js'
import { createTestUpstream, type TestUpstream } from '../../lib/testing/index.js'

const UPSTREAM_DELAY_MS = 500

async function setup (t: Test, delay: number): Promise<{ app: FastifyInstance, upstream: TestUpstream, base: string }> {
  const upstream = await createTestUpstream()
  upstream.respond(() => ({ status: 200, body: { slow: true }, delay }))
  const app = Fastify({ ...gatewayServerOptions() })
  await app.register(gateway, { auth: false, services: { slow: { upstream: upstream.url, prefix: '/slow', timeout: '10s' } } })
  app.get('/fast', async () => ({ fast: true }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => {
    await app.close() // resolves at once when already closed
    await upstream.close()
  })
  const { port } = app.server.address() as { port: number }
  return { app, upstream, base: `http://127.0.0.1:${port}` }
}

/** A keep-alive client that would hold its idle connection for a minute. */
function keepAliveAgent (t: Test): Agent {
  const agent = new Agent({ connections: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000, headersTimeout: 10_000, bodyTimeout: 10_000 })
  t.teardown(async () => { await agent.destroy() })
  return agent
}

/** Status, or the error code when the request failed at the connection. */
async function outcome (url: string, agent: Agent): Promise<{ status?: number, error?: string, code?: string }> {
  try {
    const response = await request(url, { dispatcher: agent, signal: AbortSignal.timeout(10_000) })
    const text = await response.body.text()
    // The gateway's own refusal during close is a problem document.
    if (response.statusCode === 503) return { status: 503, code: (JSON.parse(text) as { code?: string }).code }
    return { status: response.statusCode }
  } catch (error) {
    const { code, cause } = error as { code?: string, cause?: { code?: string } }
    return { error: cause?.code ?? code }
  }
}

t.test('a proxied request in flight during close() completes with 200; new connections are refused', async (t) => {
  const { app, upstream, base } = await setup(t, UPSTREAM_DELAY_MS)
  const inFlightAgent = keepAliveAgent(t)
  const idleAgent = keepAliveAgent(t)
  t.same(await outcome(`${base}/fast`, idleAgent), { status: 200 }, 'an idle keep-alive connection exists before close')

  const inFlight = outcome(`${base}/slow/x`, inFlightAgent)
  await upstream.waitForRequests(1)
  const started = performance.now()
  const closing = closeGracefully(app, { deadline: '5s' })

  t.same(await outcome(`${base}/fast`, new Agent()), { error: 'ECONNREFUSED' }, 'a new connection after close starts is refused')
  // Its idle connection was closed by close(); the client reconnects, and is refused.
  t.same(await outcome(`${base}/slow/y`, idleAgent), { error: 'ECONNREFUSED' }, 'a request on the idle keep-alive connection is refused')
  t.same(await inFlight, { status: 200 }, 'the request in flight completes with 200')
  const { forced } = await closing
  const closedAfter = performance.now() - started
  t.equal(forced, false, 'finished before the deadline')
  // Without closing connections that turn idle, close() would wait for the client's 60 s keep-alive.
  t.ok(closedAfter < UPSTREAM_DELAY_MS + 1_000, `close() resolved ${closedAfter.toFixed(0)} ms after it started`)
  t.equal(upstream.requests.length, 1, 'nothing after close started reached the upstream')
})

t.test('a new request on a keep-alive connection that was busy when close() began: 503 or a closed connection, never proxied', async (t) => {
  const { app, upstream, base } = await setup(t, UPSTREAM_DELAY_MS)
  const agent = keepAliveAgent(t)
  const first = outcome(`${base}/slow/1`, agent)
  await upstream.waitForRequests(1)
  const closing = closeGracefully(app, { deadline: '5s' })
  t.same(await first, { status: 200 }, 'the request in flight completes')
  // Sent at once on the same connection: the gateway answers a problem 503 if it arrives before the
  // connection is closed, else the client finds it closed and cannot reconnect.
  const next = await outcome(`${base}/slow/2`, agent)
  t.ok((next.status === 503 && next.code === 'GATEWAY_ERR_SHUTTING_DOWN') || next.error === 'ECONNREFUSED' || next.error === 'UND_ERR_SOCKET' || next.error === 'ECONNRESET', `refused: ${JSON.stringify(next)}`)
  t.same((await closing).forced, false)
  t.equal(upstream.requests.length, 1, 'the second request never reached the upstream')
})

t.test('a request still in flight at the deadline is cut off, and close() resolves at the deadline', async (t) => {
  const { app, upstream, base } = await setup(t, 5_000)
  const agent = keepAliveAgent(t)
  const inFlight = outcome(`${base}/slow/x`, agent)
  await upstream.waitForRequests(1)
  const started = performance.now()
  const { forced } = await closeGracefully(app, { deadline: 300 })
  const closedAfter = performance.now() - started
  t.equal(forced, true, 'the deadline passed')
  t.ok(closedAfter >= 290 && closedAfter < 1_300, `close() resolved ${closedAfter.toFixed(0)} ms after it started (deadline 300)`)
  const cut = await inFlight
  t.equal(cut.status, undefined, 'no response')
  t.ok(cut.error === 'UND_ERR_SOCKET' || cut.error === 'ECONNRESET', `the connection was closed: ${String(cut.error)}`)
})

t.test('closeGracefully rejects an invalid deadline with GATEWAY_ERR_INVALID_OPTION, before closing anything', async (t) => {
  const { app, base } = await setup(t, 0)
  await t.rejects(closeGracefully(app, { deadline: 'soon' as never }), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  await t.rejects(closeGracefully(app, { grace: 1 } as never), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  t.same(await outcome(`${base}/fast`, new Agent()), { status: 200 }, 'still serving')
})

t.test('the starter (examples/minimal-gateway/server.ts): SIGTERM mid-request → the request gets 200, the process exits 0', async (t) => {
  const upstream = await createTestUpstream()
  upstream.respond(() => ({ status: 200, body: { slow: true }, delay: UPSTREAM_DELAY_MS }))
  const root = fileURLToPath(new URL('../../', import.meta.url))
  const child = spawn(fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url)), ['--import', '@tapjs/typescript/import', 'examples/minimal-gateway/server.ts'], {
    cwd: root,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', USERS_URL: upstream.url, ORDERS_URLS: upstream.url, PAYMENTS_URL: upstream.url },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  const guard = setTimeout(() => child.kill('SIGKILL'), 30_000)
  t.teardown(async () => {
    clearTimeout(guard)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    await upstream.close()
  })
  const exited = once(child, 'exit')
  const port = await new Promise<number>((resolve, reject) => {
    const check = (): void => {
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (match !== null) resolve(Number(match[1]))
    }
    child.stdout.on('data', check)
    exited.then(() => reject(new Error(`exited before listening:\n${output}`)), () => {})
  })

  const agent = keepAliveAgent(t)
  const inFlight = (async () => {
    const response = await request(`http://127.0.0.1:${port}/api/v1/users/1`, { dispatcher: agent, headers: { 'x-api-key': 'demo-key-change-me' } })
    return { status: response.statusCode, body: await response.body.json() }
  })()
  await upstream.waitForRequests(1)
  const started = performance.now()
  child.kill('SIGTERM')
  t.match(await inFlight, { status: 200, body: { slow: true } }, 'the request in flight got its answer')
  const [code, signal] = await exited
  const exitedAfter = performance.now() - started
  t.same({ code, signal }, { code: 0, signal: null }, 'exits 0', { output })
  t.ok(exitedAfter < UPSTREAM_DELAY_MS + 2_000, `exited ${exitedAfter.toFixed(0)} ms after SIGTERM (not held by the client's keep-alive)`)
})
