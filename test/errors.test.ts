// Errors are data: the catalogue in lib/errors.ts, docs/errors.md and the codes used in lib/ agree.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Fastify from 'fastify'
import { GATEWAY_ERRORS, InvalidOptionError, problemBody, sendProblem } from '../lib/index.js'

const root = new URL('..', import.meta.url).pathname
const CODE = /GATEWAY_ERR_[A-Z0-9_]+/g
const thrownCodes = [new InvalidOptionError('x', 'y').code]
const catalogue = new Set([...Object.keys(GATEWAY_ERRORS), ...thrownCodes])

function sourceFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [])
}

t.test('docs/errors.md lists every code, and only codes that exist', async (t) => {
  const documented = new Set(readFileSync(join(root, 'docs/errors.md'), 'utf8').match(CODE))
  for (const code of catalogue) t.ok(documented.has(code), `${code} is documented`)
  for (const code of documented) t.ok(catalogue.has(code), `${code} (in the docs) exists`)
})

t.test('every code used in lib/ is in the catalogue', async (t) => {
  for (const file of sourceFiles(join(root, 'lib'))) {
    for (const code of readFileSync(file, 'utf8').match(CODE) ?? []) t.ok(catalogue.has(code), `${code} in ${file.slice(root.length)}`)
  }
})

t.test('every status is an error status with a title', async (t) => {
  for (const [code, { status, title }] of Object.entries(GATEWAY_ERRORS)) {
    t.ok(status >= 400 && status <= 599, `${code} status`)
    t.ok(title.length > 0, `${code} title`)
  }
})

t.test('problem documents follow RFC 9457 and carry the request id', async (t) => {
  t.same(JSON.parse(problemBody('GATEWAY_ERR_UPSTREAM_TIMEOUT', 'rid-1')), {
    type: 'urn:fastify-gateway:error:GATEWAY_ERR_UPSTREAM_TIMEOUT',
    title: 'Upstream timeout',
    status: 504,
    code: 'GATEWAY_ERR_UPSTREAM_TIMEOUT',
    requestId: 'rid-1'
  })
  const app = Fastify({ genReqId: () => 'rid-2' })
  app.get('/', async (_request, reply) => sendProblem(reply, 'GATEWAY_ERR_BAD_REQUEST', { detail: 'x-tenant is required', headers: { 'retry-after': 1 } }))
  const response = await app.inject('/')
  t.equal(response.statusCode, 400)
  t.equal(response.headers['content-type'], 'application/problem+json; charset=utf-8')
  t.equal(response.headers['retry-after'], '1')
  t.same(response.json(), { type: 'urn:fastify-gateway:error:GATEWAY_ERR_BAD_REQUEST', title: 'Bad request', status: 400, code: 'GATEWAY_ERR_BAD_REQUEST', requestId: 'rid-2', detail: 'x-tenant is required' })
})
