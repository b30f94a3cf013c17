// startTestRedisCluster: boots a real cluster whose every node agrees it is up, kills a master on
// demand, refuses bad input and missing binaries, and leaves no process behind.
import t from 'tap'
import { once } from 'node:events'
import { connect } from 'node:net'
import { Redis } from 'ioredis'
import { startTestRedisCluster } from '../../lib/testing/index.js'

async function clusterInfo (port: number): Promise<string> {
  const client = new Redis(port, '127.0.0.1', { commandTimeout: 1_000, maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true })
  client.on('error', () => {})
  try {
    await client.connect()
    return await client.cluster('INFO') as string
  } finally {
    client.disconnect()
  }
}

/** Resolves when a TCP connection is refused; rejects when one is accepted. */
async function refused (port: number): Promise<void> {
  const socket = connect(port, '127.0.0.1')
  const [event] = await Promise.race([once(socket, 'connect').then(() => ['connect']), once(socket, 'error')]) as [NodeJS.ErrnoException | 'connect']
  socket.destroy()
  if (event === 'connect') throw new Error(`127.0.0.1:${port} accepted a connection`)
  if (event.code !== 'ECONNREFUSED') throw new Error(`127.0.0.1:${port}: ${String(event.code)}`, { cause: event })
}

t.test('3 masters, cluster_state:ok on each; kill(i) stops that node; close() stops the rest', async (t) => {
  const cluster = await startTestRedisCluster({ masters: 3 })
  t.teardown(cluster.close)
  t.equal(cluster.nodes.length, 3)
  t.equal(new Set(cluster.nodes.map((node) => node.port)).size, 3, 'three distinct ports')
  for (const node of cluster.nodes) {
    t.equal(node.host, '127.0.0.1')
    t.match(await clusterInfo(node.port), /cluster_state:ok/, `${node.port} says the cluster is up`)
    t.match(await clusterInfo(node.port), /cluster_known_nodes:3\r\n/, `${node.port} knows 3 nodes`)
  }
  await cluster.kill(1)
  await t.resolves(refused(cluster.nodes[1].port), 'the killed master refuses connections')
  await t.rejects(cluster.kill(3), RangeError)
  await cluster.close()
  for (const node of cluster.nodes) await t.resolves(refused(node.port), `${node.port} stopped`)
})

t.test('fewer than 3 masters, or a missing redis-server / redis-cli, is an error', async (t) => {
  await t.rejects(startTestRedisCluster({ masters: 2 }), Error)
  await t.rejects(startTestRedisCluster({ serverBinary: '/nonexistent/redis-server' }), Error)
  await t.rejects(startTestRedisCluster({ cliBinary: '/nonexistent/redis-cli' }), Error)
})
