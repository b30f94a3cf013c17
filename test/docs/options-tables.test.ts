/**
 * No drift between the docs and the types: for each public options interface, the option names in
 * its docs table (the backticked names of the first column) are exactly the interface's
 * properties, read with the TypeScript compiler API from lib/index.ts and lib/testing/index.ts.
 * A row whose default says "required" must be a required property, and the other way round.
 *
 * Conventions: an options table is a markdown table whose first header cell is `option` and which
 * has a `default` column; it is found by the heading it sits under (and its rank among the options
 * tables there). A property documented row by row as dotted names (`jwks.timeout`) is listed in
 * `expand`. Every options table of docs/ must belong to an interface below, and every exported
 * `*Options` interface must have a table, or be listed in NO_TABLE with the reason.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const repo = fileURLToPath(new URL('../../', import.meta.url))

interface TableSpec {
  /** The exported interface. */
  name: string
  /** From which entry point. */
  entry: 'lib/index.ts' | 'lib/testing/index.ts'
  /** The docs page, relative to the repo. */
  page: string
  /** Text of the heading the table sits under, as written (backticks included). */
  heading: string
  /** Rank among the options tables under that heading. Default 0. */
  nth?: number
  /** Properties documented as `property.key` rows, one per key of the property's object type. */
  expand?: string[]
}

const TABLES: TableSpec[] = [
  { name: 'GatewayOptions', entry: 'lib/index.ts', page: 'docs/getting-started.md', heading: 'The umbrella\'s options: `GatewayOptions`' },
  { name: 'GatewayRoutePolicy', entry: 'lib/index.ts', page: 'docs/getting-started.md', heading: 'Policy next to the route: `config.gateway`' },
  { name: 'GatewayServiceOptions', entry: 'lib/index.ts', page: 'docs/proxy.md', heading: 'The services table' },
  { name: 'GatewayTimeouts', entry: 'lib/index.ts', page: 'docs/proxy.md', heading: 'Timeouts: `GatewayTimeouts`' },
  { name: 'ProxyOptions', entry: 'lib/index.ts', page: 'docs/proxy.md', heading: 'proxy' },
  { name: 'AuthOptions', entry: 'lib/index.ts', page: 'docs/auth.md', heading: '`AuthOptions`' },
  { name: 'AuthJwtOptions', entry: 'lib/index.ts', page: 'docs/auth.md', heading: '`AuthJwtOptions`', expand: ['jwks'] },
  { name: 'JwksIssuerOptions', entry: 'lib/index.ts', page: 'docs/auth.md', heading: '`JwksIssuerOptions`' },
  { name: 'AuthApiKeyOptions', entry: 'lib/index.ts', page: 'docs/auth.md', heading: '`AuthApiKeyOptions`' },
  { name: 'RateLimitOptions', entry: 'lib/index.ts', page: 'docs/rate-limit.md', heading: 'Options', nth: 0 },
  { name: 'RateLimitPolicy', entry: 'lib/index.ts', page: 'docs/rate-limit.md', heading: 'Options', nth: 1 },
  { name: 'BreakerPolicy', entry: 'lib/index.ts', page: 'docs/resilience.md', heading: 'Options' },
  { name: 'BreakerOptions', entry: 'lib/index.ts', page: 'docs/resilience.md', heading: 'Composing by hand' },
  { name: 'CorsOptions', entry: 'lib/index.ts', page: 'docs/cors.md', heading: 'Options' },
  { name: 'MetricsOptions', entry: 'lib/index.ts', page: 'docs/observability.md', heading: 'Metrics' },
  { name: 'AccessLogOptions', entry: 'lib/index.ts', page: 'docs/observability.md', heading: 'Access log' },
  { name: 'GatewayServerOptions', entry: 'lib/index.ts', page: 'docs/server-options.md', heading: 'Options' },
  { name: 'CorrelationIdOptions', entry: 'lib/index.ts', page: 'docs/correlation-id.md', heading: 'Options' },
  { name: 'RequestGuardOptions', entry: 'lib/index.ts', page: 'docs/request-guard.md', heading: 'Options' },
  { name: 'CloseGracefullyOptions', entry: 'lib/index.ts', page: 'docs/deployment.md', heading: 'Shutdown' },
  { name: 'HealthOptions', entry: 'lib/index.ts', page: 'docs/deployment.md', heading: 'Health and readiness' },
  { name: 'IdentityProviderOptions', entry: 'lib/testing/index.ts', page: 'docs/recipes/testing-your-gateway.md', heading: 'The identity provider' },
  { name: 'IdentityProviderSignOptions', entry: 'lib/testing/index.ts', page: 'docs/recipes/testing-your-gateway.md', heading: 'The identity provider', nth: 1 },
  { name: 'TestRedisClusterOptions', entry: 'lib/testing/index.ts', page: 'docs/recipes/testing-your-gateway.md', heading: 'A Redis Cluster' }
]

/** Exported `*Options` interfaces documented otherwise than by an options table. */
const NO_TABLE: Record<string, string> = {}

// ---- the types -------------------------------------------------------------------------------

interface Property { optional: boolean }

const started = performance.now()
const program = ts.createProgram([join(repo, 'lib/index.ts'), join(repo, 'lib/testing/index.ts')], {
  target: ts.ScriptTarget.ES2023,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  strict: true,
  skipLibCheck: true,
  noEmit: true,
  types: ['node']
})
const checker = program.getTypeChecker()
const programSeconds = (performance.now() - started) / 1000

function exportsOf (entry: TableSpec['entry']): Map<string, ts.Symbol> {
  const file = program.getSourceFile(join(repo, entry))
  const moduleSymbol = file === undefined ? undefined : checker.getSymbolAtLocation(file)
  if (moduleSymbol === undefined) throw new Error(`${entry} is not a module`)
  return new Map(checker.getExportsOfModule(moduleSymbol).map((symbol) => [symbol.name, symbol]))
}
const EXPORTS = { 'lib/index.ts': exportsOf('lib/index.ts'), 'lib/testing/index.ts': exportsOf('lib/testing/index.ts') }

function isInterface (symbol: ts.Symbol): boolean {
  const target = (symbol.flags & ts.SymbolFlags.Alias) !== 0 ? checker.getAliasedSymbol(symbol) : symbol
  return (target.flags & ts.SymbolFlags.Interface) !== 0
}

/** Property names of an exported interface; `expand`ed ones as `name.key` for each key of their object type. */
function propertiesOf (spec: TableSpec): Map<string, Property> {
  const exported = EXPORTS[spec.entry].get(spec.name)
  if (exported === undefined) throw new Error(`${spec.entry} does not export ${spec.name}`)
  const symbol = (exported.flags & ts.SymbolFlags.Alias) !== 0 ? checker.getAliasedSymbol(exported) : exported
  const properties = new Map<string, Property>()
  for (const property of checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(symbol))) {
    const optional = (property.flags & ts.SymbolFlags.Optional) !== 0
    if (!(spec.expand ?? []).includes(property.name)) {
      properties.set(property.name, { optional })
      continue
    }
    const type = checker.getNonNullableType(checker.getTypeOfSymbol(property))
    const objects = (type.isUnion() ? type.types : [type]).filter((member) => (member.flags & ts.TypeFlags.Object) !== 0)
    if (objects.length === 0) throw new Error(`${spec.name}.${property.name} has no object type to expand`)
    for (const member of objects) {
      for (const key of checker.getPropertiesOfType(member)) {
        properties.set(`${property.name}.${key.name}`, { optional: (key.flags & ts.SymbolFlags.Optional) !== 0 })
      }
    }
  }
  return properties
}

// ---- the docs --------------------------------------------------------------------------------

interface Row { names: string[], defaultText: string | undefined, line: number }
interface Table { page: string, heading: string, nth: number, line: number, rows: Row[] }

/** The cells of a markdown table row (`\|` is a pipe inside a cell). */
function cells (line: string): string[] {
  return line.trim().replace(/^\|/, '').replace(/\|$/, '').split(/(?<!\\)\|/).map((cell) => cell.trim())
}

/** Every options table of a page, with the heading it sits under. */
function optionsTables (page: string): Table[] {
  const lines = readFileSync(join(repo, page), 'utf8').split('\n')
  const tables: Table[] = []
  const ranks = new Map<string, number>()
  let heading = ''
  let fenced = false
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced
    if (fenced) continue
    const title = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)
    if (title !== null) {
      heading = title[1]
      continue
    }
    if (!line.startsWith('|') || (i > 0 && lines[i - 1].startsWith('|'))) continue
    const header = cells(line).map((cell) => cell.toLowerCase())
    const body: string[] = []
    for (let j = i + 2; j < lines.length && lines[j].startsWith('|'); j++) body.push(lines[j])
    if (header[0] !== 'option' || !header.includes('default')) continue
    const defaultColumn = header.indexOf('default')
    const nth = ranks.get(heading) ?? 0
    ranks.set(heading, nth + 1)
    tables.push({
      page,
      heading,
      nth,
      line: i + 1,
      rows: body.map((row, k) => ({
        names: [...cells(row)[0].matchAll(/`([^`]+)`/g)].map((match) => match[1]),
        defaultText: cells(row)[defaultColumn],
        line: i + 3 + k
      }))
    })
  }
  return tables
}

const pages = [
  ...readdirSync(join(repo, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`),
  ...readdirSync(join(repo, 'docs', 'recipes')).filter((name) => name.endsWith('.md')).map((name) => `docs/recipes/${name}`)
]
const allTables = pages.flatMap(optionsTables)

// ---- the checks ------------------------------------------------------------------------------

for (const spec of TABLES) {
  t.test(`${spec.name} ↔ ${spec.page} § ${spec.heading}`, async (t) => {
    const table = allTables.find((candidate) => candidate.page === spec.page && candidate.heading === spec.heading && candidate.nth === (spec.nth ?? 0))
    if (table === undefined) {
      t.fail(`no options table under "${spec.heading}" (rank ${spec.nth ?? 0}) in ${spec.page}`)
      return
    }
    const properties = propertiesOf(spec)
    const documented = new Map<string, Row>()
    for (const row of table.rows) {
      t.equal(row.names.length, 1, `${spec.page}:${row.line} names one option in its first column`, { names: row.names })
      for (const name of row.names) {
        t.notOk(documented.has(name), `${spec.page}:${row.line}: \`${name}\` is documented once`)
        documented.set(name, row)
      }
    }
    t.same([...documented.keys()].filter((name) => !properties.has(name)).sort(), [], `documented in ${spec.page} but not a property of ${spec.name}`)
    t.same([...properties.keys()].filter((name) => !documented.has(name)).sort(), [], `properties of ${spec.name} missing from ${spec.page}:${table.line}`)
    for (const [name, row] of documented) {
      const property = properties.get(name)
      if (property === undefined) continue
      const saysRequired = /^required\b/i.test(row.defaultText ?? '')
      t.equal(saysRequired, !property.optional, `${spec.page}:${row.line}: \`${name}\` is ${property.optional ? 'optional' : 'required'} in ${spec.name}`, { default: row.defaultText })
    }
  })
}

t.test('every options table in docs/ belongs to an interface', async (t) => {
  const claimed = allTables.filter((table) => !TABLES.some((spec) => spec.page === table.page && spec.heading === table.heading && (spec.nth ?? 0) === table.nth))
  t.same(claimed.map((table) => `${table.page}:${table.line} (${table.heading})`), [])
})

t.test('every exported *Options interface has a docs table', async (t) => {
  for (const entry of ['lib/index.ts', 'lib/testing/index.ts'] as const) {
    for (const [name, symbol] of EXPORTS[entry]) {
      if (!name.endsWith('Options') || !isInterface(symbol)) continue
      t.ok(TABLES.some((spec) => spec.name === name) || name in NO_TABLE, `${entry}: ${name}`)
    }
  }
})

t.teardown(() => {
  console.log(`# program ${programSeconds.toFixed(1)} s, total ${((performance.now() - started) / 1000).toFixed(1)} s`)
})
