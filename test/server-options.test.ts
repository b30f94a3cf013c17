// gatewayServerOptions(): constructor options a plugin cannot set.
import t from 'tap'
import Fastify from 'fastify'
import { gateway, gatewayServerOptions } from '../lib/index.js'
import { listen } from './helpers/gateway.js'
import { rawRequest } from './helpers/raw-http.js'

t.test('a requestTimeout shorter than 60 s cuts off a slow body (Node swaps the timeouts otherwise)', async (t) => {
  const app = Fastify({ ...gatewayServerOptions({ requestTimeout: '1s' }) })
  await app.register(gateway, { auth: false })
  app.post('/slow', async () => 'never')
  t.teardown(() => app.close())
  const port = await listen(app)
  t.equal(app.server.requestTimeout, 1_000)
  t.ok(app.server.headersTimeout <= 1_000, `headersTimeout ${app.server.headersTimeout}`)
  const started = Date.now()
  // Declares 100 bytes of JSON, sends 1: the parser waits for the rest.
  const response = await rawRequest(port, 'POST /slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{', { timeoutMs: 10_000 })
  const elapsed = Date.now() - started
  t.equal(response.status, 408)
  t.equal(JSON.parse(response.body).code, 'GATEWAY_ERR_REQUEST_TIMEOUT')
  t.ok(elapsed >= 900 && elapsed < 3_000, `cut off after ${elapsed} ms`)
})

t.test('invalid options are refused', async (t) => {
  t.throws(() => gatewayServerOptions({ requestTimeout: 'soon' as never }), { code: 'GATEWAY_ERR_INVALID_OPTION' })
  t.throws(() => gatewayServerOptions({ other: 1 } as never), { code: 'GATEWAY_ERR_INVALID_OPTION' })
})
