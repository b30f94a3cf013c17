/**
 * A throwaway Redis Cluster (N masters, no replicas) on free loopback ports, for tests that need a
 * real cluster — and need to kill one of its masters. Never a mock: slot routing, MOVED and
 * CLUSTERDOWN are Redis's own.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './ports.js'

/**
 * A running test Redis Cluster.
 *
 * @example
 * ```ts
 * const cluster = await startTestRedisCluster()
 * const store = new Cluster(cluster.nodes, { enableOfflineQueue: false, redisOptions: { commandTimeout: 100 } })
 * await cluster.kill(0) // a master fails mid-test
 * await cluster.close()
 * ```
 */
export interface TestRedisCluster {
  /** One entry per master, in start order: pass them to ioredis' `new Cluster(nodes, …)`. */
  readonly nodes: ReadonlyArray<{ readonly host: string, readonly port: number }>
  /** SIGKILL the master at `index`: its connections drop and its slots have no owner any more. */
  kill: (index: number) => Promise<void>
  /** Stop every node and remove the temporary directory. */
  close: () => Promise<void>
}

/**
 * Options of {@link startTestRedisCluster}.
 *
 * @example
 * ```ts
 * const cluster = await startTestRedisCluster({ masters: 3 })
 * ```
 */
export interface TestRedisClusterOptions {
  /** Number of masters (at least 3, as `redis-cli --cluster create` requires). Default 3. */
  masters?: number
  /** `cluster-node-timeout` in ms: how long a dead master goes unnoticed by the others. Default 2000. */
  nodeTimeout?: number
  /** Default `redis-server`. */
  serverBinary?: string
  /** Default `redis-cli`. */
  cliBinary?: string
}

const START_TIMEOUT_MS = 5_000
const CREATE_TIMEOUT_MS = 15_000
const CLUSTER_OK_TIMEOUT_MS = 10_000

/** Send one inline command and resolve with everything received until `done(text)` or a timeout. */
async function ask (port: number, command: string, done: (text: string) => boolean, timeoutMs = 500): Promise<string> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    const finish = (): void => {
      socket.destroy()
      resolve(text)
    }
    socket.setTimeout(timeoutMs, finish)
    socket.on('error', finish)
    socket.on('data', (data) => {
      text += data.toString()
      if (done(text)) finish()
    })
    socket.on('connect', () => socket.write(`${command}\r\n`))
  })
}

const answersPing = async (port: number): Promise<boolean> => (await ask(port, 'PING', (text) => text.includes('\r\n'), 200)).startsWith('+PONG')
const clusterStateOk = async (port: number): Promise<boolean> =>
  /cluster_state:ok\r\n/.test(await ask(port, 'CLUSTER INFO', (text) => /cluster_state:\w+\r\n/.test(text) || text.startsWith('-')))

function missingBinary (error: Error, binary: string): Error {
  return new Error((error as NodeJS.ErrnoException).code === 'ENOENT'
    ? `${binary} is not installed (Debian: apt-get install redis-server, which also installs redis-cli)`
    : `${binary} failed to start: ${error.message}`)
}

/** Poll `check` every 25 ms until it holds; throw `message` after `timeoutMs` (or the spawn error). */
async function waitFor (check: () => Promise<boolean>, timeoutMs: number, failed: () => Error | undefined, message: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const error = failed()
    if (error !== undefined) throw error
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(message)
}

interface Node {
  port: number
  child: ChildProcess
  spawnError?: Error
}

async function terminate (child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  // No pid: it never started (e.g. ENOENT), and will never emit 'exit'.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  // unref()ed so that a forgotten node never holds a test process open; ref()ed while we wait for it.
  child.ref()
  child.kill('SIGCONT')
  child.kill(signal)
  await exited
}

/** Run `redis-cli --cluster create …` to completion, bounded in time. */
async function createCluster (binary: string, ports: number[]): Promise<void> {
  const cli = spawn(binary, ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  cli.stdout.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  cli.stderr.setEncoding('utf8').on('data', (chunk: string) => { output += chunk })
  const timer = setTimeout(() => cli.kill('SIGKILL'), CREATE_TIMEOUT_MS)
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      cli.once('exit', (...exit) => resolve(exit))
      cli.once('error', (error) => reject(missingBinary(error, binary)))
    })
    if (signal === 'SIGKILL') throw new Error(`${binary} --cluster create did not finish within ${CREATE_TIMEOUT_MS / 1000} s:\n${output}`)
    if (code !== 0) throw new Error(`${binary} --cluster create exited with ${String(code ?? signal)}:\n${output}`)
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Start a Redis Cluster of `masters` masters (no replicas) on free 127.0.0.1 ports, in a temporary
 * directory; resolves once every node reports `cluster_state:ok`. Nodes are killed when the process
 * exits.
 *
 * @example
 * ```ts
 * const cluster = await startTestRedisCluster({ masters: 3 })
 * const client = new Cluster([...cluster.nodes], { enableOfflineQueue: false, redisOptions: { commandTimeout: 100, maxRetriesPerRequest: 1 } })
 * await cluster.kill(0) // one master gone: its slots fail, the failure policy must apply
 * client.disconnect()
 * await cluster.close()
 * ```
 */
export async function startTestRedisCluster (options: TestRedisClusterOptions = {}): Promise<TestRedisCluster> {
  const { masters = 3, nodeTimeout = 2_000, serverBinary = 'redis-server', cliBinary = 'redis-cli' } = options
  if (!Number.isInteger(masters) || masters < 3) throw new Error(`masters must be an integer ≥ 3, got ${String(masters)}`)
  const dir = await mkdtemp(join(tmpdir(), 'fastify-gateway-redis-cluster-'))
  const nodes: Node[] = []
  const killOnExit = (): void => { for (const node of nodes) node.child.kill('SIGKILL') }
  process.once('exit', killOnExit)

  async function close (): Promise<void> {
    process.removeListener('exit', killOnExit)
    try {
      await Promise.all(nodes.map(async (node) => { await terminate(node.child, 'SIGKILL') }))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }

  try {
    for (let i = 0; i < masters; i++) {
      const port = await freePort()
      // The bus port is port + 10000 by default, which may be taken or above 65535: pick it too.
      const busPort = await freePort()
      const child = spawn(serverBinary, [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-port', String(busPort),
        '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', String(nodeTimeout),
        '--save', '', '--appendonly', 'no', '--dir', dir
      ], { stdio: 'ignore', cwd: dir })
      child.unref()
      const node: Node = { port, child }
      child.once('error', (error) => { node.spawnError = missingBinary(error, serverBinary) })
      nodes.push(node)
    }
    for (const node of nodes) {
      await waitFor(async () => await answersPing(node.port), START_TIMEOUT_MS, () => node.spawnError, `${serverBinary} did not answer PING on 127.0.0.1:${node.port} within ${START_TIMEOUT_MS / 1000} s`)
    }
    await createCluster(cliBinary, nodes.map((node) => node.port))
    // `--cluster create` returns once slots are assigned; every node must also agree the cluster is up.
    const deadline = Date.now() + CLUSTER_OK_TIMEOUT_MS
    for (const node of nodes) {
      await waitFor(async () => await clusterStateOk(node.port), Math.max(0, deadline - Date.now()), () => undefined,
        `127.0.0.1:${node.port} did not report cluster_state:ok within ${CLUSTER_OK_TIMEOUT_MS / 1000} s`)
    }
  } catch (error) {
    await close()
    throw error
  }

  return {
    nodes: Object.freeze(nodes.map((node) => Object.freeze({ host: '127.0.0.1', port: node.port }))),
    async kill (index) {
      const node = nodes[index]
      if (node === undefined) throw new RangeError(`no node ${index} (${nodes.length} masters)`)
      await terminate(node.child, 'SIGKILL')
    },
    close
  }
}
