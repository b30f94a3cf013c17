/**
 * A throwaway `redis-server` on a free loopback port, for tests that need a real Redis — and need to
 * kill it, pause it and bring it back. Never a mock: the failure modes under test are Redis's own.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { connect } from 'node:net'
import { freePort } from './ports.js'

/**
 * A running test Redis.
 *
 * @example
 * ```ts
 * const redis = await startTestRedis()
 * const store = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
 * redis.pause() // accepts, never answers
 * redis.resume()
 * await redis.stop()
 * ```
 */
export interface TestRedis {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  readonly port: number
  /** SIGKILL: connections drop, nothing listens until `restart()`. */
  kill: () => Promise<void>
  /** SIGSTOP: the port accepts connections but nothing is answered until `resume()`. */
  pause: () => void
  /** SIGCONT after `pause()`. */
  resume: () => void
  /** Start a new server on the same port (after `kill()`), empty. */
  restart: () => Promise<void>
  /** Stop for good. */
  stop: () => Promise<void>
}

async function ping (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(200, () => done(false))
    socket.on('error', () => done(false))
    socket.on('data', (data) => done(data.toString().startsWith('+PONG')))
    socket.on('connect', () => socket.write('PING\r\n'))
  })
}

function spawnRedis (port: number, binary: string): ChildProcess {
  const child = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes'], { stdio: 'ignore' })
  child.unref()
  return child
}

async function waitUntilReady (child: ChildProcess, port: number, binary: string): Promise<void> {
  let spawnError: Error | undefined
  child.once('error', (error) => { spawnError = error })
  const deadline = Date.now() + 5_000
  while (Date.now() < deadline) {
    if (spawnError !== undefined) {
      throw new Error((spawnError as NodeJS.ErrnoException).code === 'ENOENT'
        ? `${binary} is not installed (Debian: apt-get install redis-server)`
        : `${binary} failed to start: ${spawnError.message}`)
    }
    if (await ping(port)) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  child.kill('SIGKILL')
  throw new Error(`${binary} did not answer PING on 127.0.0.1:${port} within 5 s`)
}

/**
 * Start a throwaway Redis on a free 127.0.0.1 port; it is killed when the process exits.
 *
 * @example
 * ```ts
 * const redis = await startTestRedis()
 * const client = new Redis(redis.url, { enableOfflineQueue: false, commandTimeout: 100, maxRetriesPerRequest: 1 })
 * redis.pause()   // Redis stops answering: the failure policy must apply
 * redis.resume()
 * await redis.stop()
 * ```
 */
export async function startTestRedis (options: { binary?: string } = {}): Promise<TestRedis> {
  const binary = options.binary ?? 'redis-server'
  const port = await freePort()
  let child = spawnRedis(port, binary)
  await waitUntilReady(child, port, binary)
  const killOnExit = (): void => { child.kill('SIGKILL') }
  process.once('exit', killOnExit)

  async function terminate (signal: NodeJS.Signals): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    // The child is unref()ed so that a forgotten server never holds a test process open; while we
    // wait for it to exit, it must hold the event loop, or a script's last `await stop()` never settles.
    child.ref()
    child.kill('SIGCONT')
    child.kill(signal)
    await exited
  }

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async kill () { await terminate('SIGKILL') },
    pause () { child.kill('SIGSTOP') },
    resume () { child.kill('SIGCONT') },
    async restart () {
      await terminate('SIGKILL')
      child = spawnRedis(port, binary)
      await waitUntilReady(child, port, binary)
    },
    async stop () {
      process.removeListener('exit', killOnExit)
      await terminate('SIGTERM')
    }
  }
}
