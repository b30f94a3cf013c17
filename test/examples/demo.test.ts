// Runs examples/minimal-gateway the way `npm run demo` does: a real process, a real port, a real
// SIGTERM — the starter teams copy must boot, proxy and shut down cleanly.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
// The system node may be older than `engines`; npm scripts run the `node` devDependency.
const NODE = join(ROOT, 'node_modules', '.bin', 'node')
const BOOT_TIMEOUT_MS = 20_000
const EXIT_TIMEOUT_MS = 15_000
const LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/

function startDemo (): { child: ChildProcess, output: () => string } {
  // METRICS_PORT 0: never the default 9464, which another process on this machine may hold.
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', METRICS_PORT: '0' }
  for (const name of ['USERS_URL', 'ORDERS_URLS', 'PAYMENTS_URL', 'JWT_ISSUER', 'JWT_SECRET', 'CORS_ORIGINS', 'METRICS_HOST', 'DEMO_API_KEY']) delete env[name]
  const child = spawn(NODE, ['--import', '@tapjs/typescript/import', 'examples/minimal-gateway/server.ts'], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let text = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  return { child, output: () => text }
}

async function waitForPort (child: ChildProcess, output: () => string): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no "listening on" line within ${BOOT_TIMEOUT_MS} ms:\n${output()}`)), BOOT_TIMEOUT_MS)
    function check (): void {
      const match = LISTENING.exec(output())
      if (match !== null) finish(undefined, Number(match[1]))
    }
    function exited (): void {
      finish(new Error(`demo exited before listening:\n${output()}`))
    }
    function finish (error: Error | undefined, port?: number): void {
      clearTimeout(timer)
      child.stdout?.off('data', check)
      child.off('exit', exited)
      if (error === undefined) resolve(port as number)
      else reject(error)
    }
    child.stdout?.on('data', check)
    child.on('exit', exited)
    check()
  })
}

async function waitForExit (child: ChildProcess): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return { code: child.exitCode, signal: child.signalCode }
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo still running ${EXIT_TIMEOUT_MS} ms after SIGTERM`)), EXIT_TIMEOUT_MS)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal })
    })
  })
}

async function getJson (url: string, headers: Record<string, string> = { 'x-api-key': 'demo-key-change-me' }): Promise<{ status: number, requestId: string | null, body: any }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000), headers })
  return { status: res.status, requestId: res.headers.get('x-request-id'), body: await res.json() }
}

t.test('npm run demo boots, proxies to the demo upstreams and exits 0 on SIGTERM', async (t) => {
  const { child, output } = startDemo()
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const port = await waitForPort(child, output)
  const base = `http://127.0.0.1:${port}`

  const user = await getJson(`${base}/api/v1/users/1?fields=name`)
  t.equal(user.status, 200)
  t.match(user.body, { service: 'users', path: '/1?fields=name', user: { id: '1', name: 'Ada Lovelace' } })
  t.equal(user.body.requestId, user.requestId, 'the upstream received the request id the client got back')

  const first = await getJson(`${base}/api/v1/orders`)
  const second = await getJson(`${base}/api/v1/orders`)
  t.equal(first.status, 200)
  t.equal(second.status, 200)
  t.same([first.body.instance, second.body.instance].sort(), ['orders-1', 'orders-2'], 'round robin over both instances')

  const health = await getJson(`${base}/health`)
  t.equal(health.status, 200)
  t.same(health.body, { ok: true })

  // The printed Bearer token is signed with the demo's own secret.
  const token = /authorization: Bearer ([\w-]+\.[\w-]+\.[\w-]+)/.exec(output())?.[1]
  t.ok(token, 'a demo token is printed')
  const me = await getJson(`${base}/api/v1/me`, { authorization: `Bearer ${token ?? ''}` })
  t.equal(me.status, 200)
  t.same(me.body, { id: 'demo-user', scopes: ['reports:read'] })

  // Metrics are on their own listener, whose URL is printed; the public port has none.
  const metricsUrl = /curl -s (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(output())?.[1]
  t.ok(metricsUrl, 'the metrics URL is printed')
  const scrape = await fetch(metricsUrl ?? 'http://127.0.0.1:1/metrics', { signal: AbortSignal.timeout(5_000) })
  t.equal(scrape.status, 200)
  t.match(await scrape.text(), /gateway_requests_total\{[^}]*service="users"/)
  t.equal((await getJson(`${base}/metrics`)).status, 404)

  child.kill('SIGTERM')
  const exit = await waitForExit(child)
  t.same(exit, { code: 0, signal: null }, 'exits 0 on SIGTERM', { output: output() })
})
