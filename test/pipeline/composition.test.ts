// The umbrella's order, the dependency checks of hand-composed plugins, and option validation.
// (light-my-request resolves dot segments with `new URL`; an encoded slash survives it.)
import t from 'tap'
import Fastify from 'fastify'
import { correlationId, gateway, InvalidOptionError, proxy, requestGuard } from '../../lib/index.js'
import { createTestUpstream } from '../../lib/testing/index.js'

const upstream = await createTestUpstream()
t.teardown(() => upstream.close())

t.test('plugins composed by hand in a wrong order fail at boot with a message naming what is missing', async (t) => {
  const noGuard = Fastify()
  noGuard.register(correlationId).register(proxy, { services: {} })
  await t.rejects(async () => { await noGuard.ready() }, /fastify-gateway\.request-guard/)

  const nothing = Fastify()
  nothing.register(proxy, { services: {} })
  await t.rejects(async () => { await nothing.ready() }, /fastify-gateway\.correlation-id/)
})

t.test('composed by hand in the right order, the plugins serve like the umbrella', async (t) => {
  const app = Fastify()
  app.register(correlationId).register(requestGuard).register(proxy, { services: { s: { upstream: upstream.url, prefix: '/s' } } })
  t.teardown(() => app.close())
  const response = await app.inject({ url: '/s/x' })
  t.equal(response.statusCode, 200)
  t.equal(upstream.requests.at(-1)?.url, '/x')
  t.equal((await app.inject({ url: '/s/a%2Fb' })).statusCode, 400)
})

t.test('the umbrella runs correlation id, then the guard, then the proxy', async (t) => {
  const app = Fastify()
  await app.register(gateway, { auth: false, services: { s: { upstream: upstream.url, prefix: '/s' } } })
  t.teardown(() => app.close())
  // The guard's 400 carries the id chosen by correlation-id: correlation-id ran first.
  const refused = await app.inject({ url: '/s/a%2Fb', headers: { 'x-request-id': 'order-1' } })
  t.equal(refused.statusCode, 400)
  t.equal(refused.json().requestId, 'order-1')
  t.equal(refused.headers['x-request-id'], 'order-1')
  t.ok(app.hasPlugin('fastify-gateway.correlation-id'))
  t.ok(app.hasPlugin('fastify-gateway.request-guard'))
  t.ok(app.hasPlugin('fastify-gateway.proxy'))
})

t.test('the team\'s own routes get the guard too, before and after the gateway', async (t) => {
  const app = Fastify()
  app.get('/before/*', async () => 'before')
  await app.register(gateway, { auth: false })
  app.get('/after/*', async () => 'after')
  t.teardown(() => app.close())
  t.equal((await app.inject({ url: '/before/a%2Fb' })).statusCode, 400)
  t.equal((await app.inject({ url: '/after/a%2Fb' })).statusCode, 400)
  t.equal((await app.inject({ url: '/after/ok' })).body, 'after')
  t.equal((await app.inject({ url: '/nowhere' })).statusCode, 404, 'unknown paths stay 404')
})

const invalid: Array<[string, unknown, string]> = [
  ['auth left out (secure by default)', { services: {} }, 'auth'],
  ['unknown top-level option', { auth: false, servics: {} }, 'servics'],
  ['service without upstream', { auth: false, services: { a: { prefix: '/a' } } }, 'services.a.upstream'],
  ['upstream with a bad scheme', { auth: false, services: { a: { upstream: 'ftp://x', prefix: '/a' } } }, 'services.a.upstream'],
  ['upstream with credentials', { auth: false, services: { a: { upstream: 'http://u:p@x', prefix: '/a' } } }, 'services.a.upstream'],
  ['one bad upstream of several', { auth: false, services: { a: { upstream: ['http://x', 'nope'], prefix: '/a' } } }, 'services.a.upstream[1]'],
  ['prefix without leading slash', { auth: false, services: { a: { upstream: 'http://x', prefix: 'a' } } }, 'services.a.prefix'],
  ['prefix with a parameter', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a/:id' } } }, 'services.a.prefix'],
  ['prefix with a dot segment', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a/../b' } } }, 'services.a.prefix'],
  ['prefix with a trailing slash', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a/' } } }, 'services.a.prefix'],
  ['two services on one prefix', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a' }, b: { upstream: 'http://y', prefix: '/a' } } }, 'services.b.prefix'],
  ['bad duration', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a', timeout: '10 parsecs' } } }, 'services.a.timeout'],
  ['negative duration', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a', timeout: { headers: -1 } } } }, 'services.a.timeout.headers'],
  ['TRACE method', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a', methods: ['GET', 'TRACE'] } } }, 'services.a.methods[1]'],
  ['bodyLimit not an integer', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a', bodyLimit: 1.5 } } }, 'services.a.bodyLimit'],
  ['unknown service option', { auth: false, services: { a: { upstream: 'http://x', prefix: '/a', retry: 3 } } }, 'services.a.retry'],
  ['bad service name', { auth: false, services: { 'a b': { upstream: 'http://x', prefix: '/a' } } }, 'services.a b'],
  ['bad identity header', { auth: false, identityHeaders: ['x bad'] }, 'identityHeaders[0]'],
  ['bad request id header', { auth: false, correlationId: { header: 'x:bad' } }, 'correlationId.header']
]

for (const [label, options, path] of invalid) {
  t.test(`invalid option is refused at registration: ${label}`, async (t) => {
    const app = Fastify()
    app.register(gateway, options as never)
    const error = await app.ready().then(() => undefined, (err: unknown) => err)
    t.type(error, InvalidOptionError)
    t.equal((error as { code?: string }).code, 'GATEWAY_ERR_INVALID_OPTION')
    t.match((error as Error).message, `"${path}"`, 'names the option path')
    await app.close()
  })
}

t.test('valid options are accepted and never mutated', async (t) => {
  const options = {
    auth: false,
    correlationId: { header: 'X-Request-Id' },
    identityHeaders: ['x-tenant'],
    services: {
      a: { upstream: [upstream.url], prefix: '/a', timeout: { connect: '1s', headers: 2000, body: '1m' }, methods: ['get', 'POST'] }
    }
  }
  const snapshot = structuredClone(options)
  const app = Fastify()
  await app.register(gateway, options as never)
  await app.ready()
  t.same(options, snapshot)
  t.equal((await app.inject({ url: '/a/1' })).statusCode, 200)
  await app.close()
})
