// Tracing (issue 6): the documented OpenTelemetry setup (docs/observability.md) gives spans for auth,
// rate limiting and the upstream call, all in the client's trace, and the upstream gets that trace.
import t from 'tap'
import Fastify from 'fastify'
import { SpanKind } from '@opentelemetry/api'
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node'
import { registerInstrumentations } from '@opentelemetry/instrumentation'
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici'
import { FastifyOtelInstrumentation } from '@fastify/otel'
import { gateway } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { hs256, SECRET } from '../helpers/tokens.js'

const exporter = new InMemorySpanExporter()
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] })
provider.register()
const fastifyOtel = new FastifyOtelInstrumentation()
const unregister = registerInstrumentations({ instrumentations: [fastifyOtel, new UndiciInstrumentation()] })

const upstream = await createTestUpstream()
const app = Fastify()
await app.register(fastifyOtel.plugin())
await app.register(gateway, {
  auth: { jwt: { secret: SECRET, audience: 'api' } },
  rateLimit: { perConsumer: { max: 100, window: '1m' } },
  services: { users: { upstream: upstream.url, prefix: '/users' } }
})
t.teardown(async () => {
  await app.close()
  await upstream.close()
  unregister()
  await provider.shutdown()
})

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'

t.test('a valid traceparent: the upstream gets the same trace; auth, limit and the upstream call are spans in it', async (t) => {
  const response = await app.inject({
    url: '/users/1',
    headers: { authorization: `Bearer ${hs256()}`, traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01` }
  })
  t.equal(response.statusCode, 200)
  const received = upstream.requests.at(-1)?.headers.traceparent as string | undefined
  t.match(received, new RegExp(`^00-${TRACE_ID}-[0-9a-f]{16}-01$`), 'same trace id at the upstream')
  t.not(received, `00-${TRACE_ID}-00f067aa0ba902b7-01`, 'its parent is the gateway\'s client span, not the client\'s')

  const spans = exporter.getFinishedSpans()
  const names = spans.map((span) => span.name)
  for (const name of ['onRequest - authenticate', 'onRequest - limitRequest', 'handler - proxyToUpstream']) t.ok(names.includes(name), `span ${name}`)
  const client = spans.find((span) => span.kind === SpanKind.CLIENT)
  t.ok(client !== undefined, 'a client span for the upstream call')
  t.equal(client?.attributes['http.response.status_code'], 200)
  t.equal(received?.split('-')[2], client?.spanContext().spanId, 'the upstream\'s parent is that client span')
  t.ok(spans.every((span) => span.spanContext().traceId === TRACE_ID), 'every span is in the client\'s trace')
})
