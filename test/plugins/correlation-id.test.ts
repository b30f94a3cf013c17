// One validated request id per request: reply header, every log line, problem bodies, upstream.
import t from 'tap'
import Fastify from 'fastify'
import { correlationId, isValidTraceparent, requestGuard } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'
import { buildTestGateway } from '../helpers/gateway.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())
const services = { users: { upstream: upstream.url, prefix: '/users' } }

function logLinesOf (logs: string[], id: string): Array<Record<string, unknown>> {
  return logs.map((line) => JSON.parse(line)).filter((entry) => entry.reqId === id)
}

for (const recommended of [true, false]) {
  t.test(`${recommended ? 'with' : 'without'} gatewayServerOptions()`, async (t) => {
    const { app, logs } = await buildTestGateway({ services }, {}, { recommendedServerOptions: recommended })
    t.teardown(() => app.close())

    t.test('a valid incoming id is honoured everywhere', async (t) => {
      const response = await app.inject({ url: '/users/1', headers: { 'x-request-id': 'req.ABC_123:x-9' } })
      t.equal(response.statusCode, 200)
      t.equal(response.headers['x-request-id'], 'req.ABC_123:x-9')
      t.equal(upstream.requests.at(-1)?.headers['x-request-id'], 'req.ABC_123:x-9')
      const lines = logLinesOf(logs, 'req.ABC_123:x-9')
      t.ok(lines.some((line) => line.msg === 'access'), 'the access line carries it')
      if (recommended) {
        // The recommended options replace Fastify's request lines, which would come before any hook.
        t.notOk(logs.some((line) => line.includes('"msg":"incoming request"')), 'no line written before the id is known')
        t.notOk(logs.some((line) => line.includes('"reqId":"req-')), 'no line carries Fastify\'s own id')
      }
    })

    const invalid: Array<[string, string]> = [
      ['too long', 'a'.repeat(129)],
      ['spaces', 'has space'],
      ['quote and brace', 'x"}{'],
      ['log injection', 'abc\\n{"level":60}'],
      ['empty', '']
    ]
    for (const [label, value] of invalid) {
      t.test(`an invalid incoming id is replaced (${label})`, async (t) => {
        const response = await app.inject({ url: '/users/1', headers: { 'x-request-id': value } })
        const id = response.headers['x-request-id'] as string
        t.not(id, value)
        t.match(id, /^[0-9a-f-]{36}$/, 'a generated UUID')
        t.equal(upstream.requests.at(-1)?.headers['x-request-id'], id)
        t.ok(logLinesOf(logs, id).length > 0, 'log lines carry the replacement')
      })
    }

    t.test('the problem body carries the same id as the reply header', async (t) => {
      const response = await app.inject({ url: '/users/1', headers: { 'x-request-id': 'abc-1' }, method: 'TRACE' })
      t.equal(response.statusCode, 405)
      t.equal(response.json().requestId, 'abc-1')
      t.equal(response.headers['x-request-id'], 'abc-1')
    })

    t.test('duplicated ids are not trusted', async (t) => {
      const response = await app.inject({ url: '/users/1', headers: { 'x-request-id': ['a', 'b'] } })
      t.match(response.headers['x-request-id'], /^[0-9a-f-]{36}$/)
    })
  })
}

t.test('a valid traceparent and its tracestate pass through; an invalid one is dropped with its tracestate', async (t) => {
  const { app } = await buildTestGateway({ services })
  t.teardown(() => app.close())
  const valid = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  await app.inject({ url: '/users/1', headers: { traceparent: valid, tracestate: 'vendor=abc' } })
  t.equal(upstream.requests.at(-1)?.headers.traceparent, valid)
  t.equal(upstream.requests.at(-1)?.headers.tracestate, 'vendor=abc')
  for (const bad of ['00-00000000000000000000000000000000-00f067aa0ba902b7-01', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'garbage', `${valid}-extra`]) {
    await app.inject({ url: '/users/1', headers: { traceparent: bad, tracestate: 'vendor=abc' } })
    t.equal(upstream.requests.at(-1)?.headers.traceparent, undefined, bad)
    t.equal(upstream.requests.at(-1)?.headers.tracestate, undefined)
  }
  t.equal(isValidTraceparent(valid), true)
  t.equal(isValidTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future'), true, 'a later version may add fields')
  t.equal(isValidTraceparent(`${valid}-extra`), false, 'version 00 may not')
  t.equal(isValidTraceparent(valid.toUpperCase()), false, 'upper-case hex is invalid per W3C')
})

t.test('a custom header name is used in and out', async (t) => {
  const { app } = await buildTestGateway({ services, correlationId: { header: 'X-Correlation-Id' } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/users/1', headers: { 'x-correlation-id': 'corr-7' } })
  t.equal(response.headers['x-correlation-id'], 'corr-7')
  t.equal(upstream.requests.at(-1)?.headers['x-correlation-id'], 'corr-7')
})

t.test('requestGuard without correlationId fails at boot, naming what is missing', async (t) => {
  const app = Fastify()
  app.register(requestGuard)
  await t.rejects(async () => { await app.ready() }, /fastify-gateway\.correlation-id/)
  const ok = Fastify()
  ok.register(correlationId).register(requestGuard)
  await t.resolves(async () => { await ok.ready() })
  await ok.close()
})
