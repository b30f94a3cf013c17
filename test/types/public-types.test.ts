/**
 * Type tests for the public types: test/types/fixtures/good.ts must compile with zero diagnostics,
 * and every line of test/types/fixtures/bad.ts marked `// @ts-expect-error` must be a compile
 * error — each one, on that line, and no other line. One Program, with the repo's own compiler
 * options, checks both (only the fixtures are checked, not lib/ itself: `tsc -p .` does that).
 *
 * bad.ts is compiled with its `@ts-expect-error` markers disarmed, so that the errors they would
 * swallow are visible; errors on exactly the marked lines is the same as the file as written
 * compiling clean (tsc reports an unused `@ts-expect-error`), which `tsc --noEmit -p .` also checks.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const repo = fileURLToPath(new URL('../../', import.meta.url))
const fixtures = join(repo, 'test', 'types', 'fixtures')
const good = join(fixtures, 'good.ts')
const bad = join(fixtures, 'bad.ts')
// Not on disk: the augmentation exactly as a consumer of the published package writes it, with
// 'fastify-gateway' mapped to lib/ (in this repo the name would resolve to dist/, if built).
const published = join(fixtures, 'published-module-name.ts')
const PUBLISHED_SOURCE = `
import type { Consumer } from 'fastify-gateway'
import type { TestUpstream } from 'fastify-gateway/testing'

declare module 'fastify-gateway' {
  interface ConsumerClaims {
    plan?: 'free' | 'pro'
  }
}

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
export const plan: Equal<Consumer['claims']['plan'], 'free' | 'pro' | undefined> = true
export const tenant: Equal<Consumer['claims']['tenant'], string | undefined> = true // good.ts's augmentation: one interface
export type Url = TestUpstream['url']
`

const MARKER = /^\s*\/\/ @ts-expect-error\b ?(.*)$/
const badSource = readFileSync(bad, 'utf8')
const lines = badSource.split('\n')
/** 1-based line of the statement that must fail → what the marker says about it. */
const expected = new Map<number, string>()
lines.forEach((line, i) => {
  const match = MARKER.exec(line)
  if (match !== null) expected.set(i + 2, match[1] || '(no description)')
})
const disarmed = lines.map((line) => MARKER.test(line) ? line.replace('@ts-expect-error', '(expected error)') : line).join('\n')

function compile (): { program: ts.Program, seconds: number } {
  const started = performance.now()
  const parsed = ts.getParsedCommandLineOfConfigFile(join(repo, 'tsconfig.json'), {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (diagnostic) => { throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')) }
  })
  if (parsed === undefined) throw new Error('tsconfig.json could not be read')
  const options: ts.CompilerOptions = {
    ...parsed.options,
    noEmit: true,
    paths: { 'fastify-gateway': [join(repo, 'lib', 'index.ts')], 'fastify-gateway/testing': [join(repo, 'lib', 'testing', 'index.ts')] }
  }
  const host = ts.createCompilerHost(options)
  const virtual = new Map([[bad, disarmed], [published, PUBLISHED_SOURCE]])
  const getSourceFile = host.getSourceFile.bind(host)
  const fileExists = host.fileExists.bind(host)
  const readFile = host.readFile.bind(host)
  host.getSourceFile = (fileName, languageVersion, ...rest) => {
    const text = virtual.get(fileName)
    return text === undefined ? getSourceFile(fileName, languageVersion, ...rest) : ts.createSourceFile(fileName, text, languageVersion, true)
  }
  host.fileExists = (fileName) => virtual.has(fileName) || fileExists(fileName)
  host.readFile = (fileName) => virtual.get(fileName) ?? readFile(fileName)
  // The ambient declarations of lib/ (e.g. lib/internal/vendor.d.ts) are not imported by anything.
  const ambient = parsed.fileNames.filter((fileName) => fileName.endsWith('.d.ts'))
  const program = ts.createProgram([good, bad, published, ...ambient], options, host)
  return { program, seconds: (performance.now() - started) / 1000 }
}

function diagnosticsOf (program: ts.Program, fileName: string): readonly ts.Diagnostic[] {
  const file = program.getSourceFile(fileName)
  if (file === undefined) throw new Error(`${fileName} is not in the program`)
  return [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)]
}

function describe (diagnostic: ts.Diagnostic): string {
  const where = diagnostic.file === undefined || diagnostic.start === undefined
    ? ''
    : `${diagnostic.file.fileName.slice(repo.length)}:${diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line + 1}: `
  return `${where}TS${diagnostic.code} ${ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')}`
}

function lineOf (diagnostic: ts.Diagnostic): number {
  return diagnostic.file === undefined || diagnostic.start === undefined ? 0 : diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start).line + 1
}

const { program, seconds } = compile()
const checkStarted = performance.now()

t.test('the compiler options are sound', async (t) => {
  t.same([...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map(describe), [])
})

t.test('good.ts compiles with zero diagnostics', async (t) => {
  t.same(diagnosticsOf(program, good).map(describe), [])
})

t.test("ConsumerClaims is augmented under the published name 'fastify-gateway'", async (t) => {
  t.same(diagnosticsOf(program, published).map(describe), [])
})

t.test('every line marked @ts-expect-error in bad.ts is a compile error, and no other line is', async (t) => {
  t.ok(expected.size >= 40, `${expected.size} refused cases`)
  const errors = diagnosticsOf(program, bad)
  const byLine = new Map<number, ts.Diagnostic[]>()
  for (const diagnostic of errors) byLine.set(lineOf(diagnostic), [...(byLine.get(lineOf(diagnostic)) ?? []), diagnostic])
  for (const [line, why] of expected) {
    const found = byLine.get(line) ?? []
    t.ok(found.length > 0, `bad.ts:${line} refused: ${why}`, { found: found.map(describe), source: lines[line - 1]?.trim() })
  }
  t.same(errors.filter((diagnostic) => !expected.has(lineOf(diagnostic))).map(describe), [], 'no error on an unmarked line')
})

t.teardown(() => {
  console.log(`# program ${seconds.toFixed(1)} s, checking ${((performance.now() - checkStarted) / 1000).toFixed(1)} s`)
})
