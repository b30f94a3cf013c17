/** Builds a gateway app for a test, with logs captured so tests can assert on what was logged. */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { gateway, gatewayServerOptions, type GatewayOptions } from '../../lib/index.js'

export interface TestGateway {
  app: FastifyInstance
  /** Every log line, as written (JSON text). */
  logs: string[]
}

/** Foundation suites test the proxy alone: `auth` defaults to false here, never in the library. */
export async function buildTestGateway (
  options: Omit<GatewayOptions, 'auth'> & { auth?: GatewayOptions['auth'] },
  serverOptions: FastifyServerOptions = {},
  { recommendedServerOptions = true }: { recommendedServerOptions?: boolean } = {}
): Promise<TestGateway> {
  const logs: string[] = []
  const app = Fastify({
    logger: { level: 'debug', stream: { write: (line: string) => { logs.push(line) } } },
    ...(recommendedServerOptions ? gatewayServerOptions({ requestIdHeader: options.correlationId?.header }) : {}),
    ...serverOptions
  })
  await app.register(gateway, { auth: false, ...options })
  return { app, logs }
}

/** Listen on a free loopback port; returns the port. */
export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return address.port
}
