/**
 * The Fastify constructor options a gateway needs and a plugin cannot set: the request id is
 * assigned before the first log line, Fastify's own URL errors become problem documents, and a
 * slow client cannot hold a request open forever (Fastify's `requestTimeout` is 0, no limit).
 */
import type { FastifyError, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import { sendProblem } from './errors.js'
import { toMilliseconds, type Duration } from './internal/duration.js'
import { optionalObject, rejectUnknownKeys } from './internal/options.js'
import { requestIdGenerator } from './plugins/correlation-id.js'

/** Options of {@link gatewayServerOptions}. */
export interface GatewayServerOptions {
  /** Request id header, as given to `correlationId`. Default `x-request-id`. */
  requestIdHeader?: string
  /** Longest time to receive a whole request (headers and body). Default 60 s. */
  requestTimeout?: Duration
}

function answerFrameworkError (error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  // FST_ERR_BAD_URL: percent-encoding find-my-way cannot decode; its own body would echo the path.
  sendProblem(reply, error.code === 'FST_ERR_BAD_URL' ? 'GATEWAY_ERR_BAD_REQUEST_TARGET' : 'GATEWAY_ERR_BAD_REQUEST')
}

/**
 * Options to spread into the Fastify constructor of a gateway.
 *
 * @example
 * ```ts
 * const app = Fastify({ logger: true, trustProxy: ['10.0.0.0/8'], ...gatewayServerOptions() })
 * await app.register(gateway, { services })
 * ```
 */
export function gatewayServerOptions (input?: GatewayServerOptions): Pick<FastifyServerOptions, 'genReqId' | 'frameworkErrors' | 'requestTimeout'> {
  const options = optionalObject(input, 'serverOptions')
  rejectUnknownKeys(options, ['requestIdHeader', 'requestTimeout'], 'serverOptions')
  return {
    genReqId: requestIdGenerator({ header: options.requestIdHeader as string | undefined }),
    frameworkErrors: answerFrameworkError as FastifyServerOptions['frameworkErrors'],
    requestTimeout: options.requestTimeout === undefined ? 60_000 : toMilliseconds(options.requestTimeout, 'serverOptions.requestTimeout')
  }
}
