/** Gateway instances as separate processes (test/fixtures/scale-out-gateway.ts) and a load spreader over them. */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { hs256, SECRET } from './tokens.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
// The system node may be older than `engines`; npm scripts run the `node` devDependency.
const NODE = fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url))
const BOOT_TIMEOUT_MS = 20_000
const EXIT_TIMEOUT_MS = 8_000
const LISTENING = /listening on (\d+)/

export interface GatewayProcess {
  readonly port: number
  readonly child: ChildProcess
  output: () => string
}

async function startOne (env: Record<string, string>): Promise<GatewayProcess> {
  const child = spawn(NODE, ['--import', '@tapjs/typescript/import', 'test/fixtures/scale-out-gateway.ts'], {
    cwd: ROOT,
    env: { ...process.env, JWT_SECRET: SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let text = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no "listening on" line within ${BOOT_TIMEOUT_MS} ms:\n${text}`)), BOOT_TIMEOUT_MS)
    function check (): void {
      const match = LISTENING.exec(text)
      if (match !== null) finish(undefined, Number(match[1]))
    }
    function exited (): void { finish(new Error(`gateway exited before listening:\n${text}`)) }
    function finish (error: Error | undefined, found?: number): void {
      clearTimeout(timer)
      child.stdout.off('data', check)
      child.off('exit', exited)
      if (error === undefined) resolve(found as number)
      else {
        child.kill('SIGKILL')
        reject(error)
      }
    }
    child.stdout.on('data', check)
    child.on('exit', exited)
  })
  return { port, child, output: () => text }
}

/** SIGTERM (graceful), SIGKILL if still running after 8 s; resolves with how it ended. */
export async function stopProcess (child: ChildProcess): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit')
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }
  return { code: child.exitCode, signal: child.signalCode }
}

/** Start `count` instances in parallel; any that fails to boot fails the call (the others are killed). */
export async function startGateways (count: number, env: Record<string, string>): Promise<GatewayProcess[]> {
  const started = await Promise.allSettled(Array.from({ length: count }, async () => await startOne(env)))
  const ok = started.filter((result) => result.status === 'fulfilled').map((result) => result.value)
  const failed = started.find((result) => result.status === 'rejected')
  if (failed !== undefined) {
    await Promise.all(ok.map(async (instance) => await stopProcess(instance.child)))
    throw failed.reason
  }
  return ok
}

export interface Answer {
  status: number
  code: string | undefined
  ms: number
  instance: number
}

/**
 * `total` GETs from one consumer (HS256 token for `sub`), round-robin over `ports`, at most
 * `concurrency` in flight; `onSent(i)` runs before request i is sent. Every request has a 5 s bound.
 */
export async function spread (ports: readonly number[], total: number, concurrency: number, onSent?: (i: number) => Promise<void> | void, sub = 'consumer-1'): Promise<Answer[]> {
  const agent = new Agent({ connections: concurrency, headersTimeout: 5_000, bodyTimeout: 5_000 })
  const token = hs256({ sub })
  const answers: Answer[] = new Array(total)
  let next = 0
  async function worker (): Promise<void> {
    while (next < total) {
      const i = next++
      await onSent?.(i)
      const instance = i % ports.length
      const started = performance.now()
      const response = await request(`http://127.0.0.1:${ports[instance]}/api/item`, {
        dispatcher: agent,
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(5_000)
      })
      const text = await response.body.text()
      const ms = performance.now() - started
      const code = response.headers['content-type']?.toString().startsWith('application/problem+json') === true ? (JSON.parse(text) as { code?: string }).code : undefined
      answers[i] = { status: response.statusCode, code, ms, instance }
    }
  }
  try {
    await Promise.all(Array.from({ length: concurrency }, worker))
  } finally {
    await agent.close()
  }
  return answers
}

/** How many answers have each `status code` pair, e.g. `{ '200': 100, '429 GATEWAY_ERR_RATE_LIMITED': 200 }`. */
export function tally (answers: readonly Answer[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const { status, code } of answers) {
    const key = code === undefined ? String(status) : `${status} ${code}`
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}
