/**
 * The published package, as a consumer gets it: `npm pack` (which runs the `prepack` build), the
 * tarball's contents, an install into a scratch project, and ESM, CommonJS and TypeScript
 * consumers using it. Runs the tools of this repo (Node 24, tsc) and the `npm` on PATH.
 *
 * Last, the acceptance of the starter (issue #9): a new project made as examples/minimal-gateway's
 * README says — the tarball installed, the starter copied, its two imports renamed to the package —
 * passes the starter's own tests and type-checks.
 *
 * The pack runs in a snapshot of the repo (without node_modules, .git, dist), never in the
 * working tree: the build empties dist/ and briefly writes lib/package.json, which would disturb
 * tests and editors running beside it.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { copyFile, cp, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = fileURLToPath(new URL('../../', import.meta.url))
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url))
const bin = join(repo, 'node_modules', '.bin')
// The system Node may be older than `engines` allows; the repo's dev dependency `node` is not.
const node = join(bin, 'node')
const tsc = join(bin, 'tsc')

// Child processes get the repo's tools first on PATH (so npm and the prepack build run on the
// repo's Node), and none of the variables an outer `npm test` / `npx` sets about this project, nor
// the outer tap's (TAP_INCLUDE would make the starter's own tap find no test file).
const env: NodeJS.ProcessEnv = { PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` }
for (const [key, value] of Object.entries(process.env)) {
  if (key === 'PATH' || /^npm_(package_|lifecycle_|command$|config_local_prefix$)/.test(key) || /^(TAP$|TAP_|_TAPJS)/.test(key)) continue
  env[key] = value
}

interface RunResult { code: number | null, signal: NodeJS.Signals | null, stdout: string, stderr: string }

/** Run a program (no shell) to completion or until `timeout` ms; never rejects. */
function run (file: string, args: string[], cwd: string, timeout: number): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env, timeout, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const failure = error as (Error & { code?: number | string, signal?: NodeJS.Signals | null }) | null
      resolve({
        code: failure === null ? 0 : typeof failure.code === 'number' ? failure.code : null,
        signal: failure?.signal ?? null,
        stdout,
        stderr: failure !== null && typeof failure.code === 'string' ? `${failure.message}\n${stderr}` : stderr
      })
    })
  })
}

/** The last line of a consumer's output, parsed as JSON (undefined if it is not JSON). */
function lastJsonLine (stdout: string): unknown {
  const line = stdout.trim().split('\n').at(-1) ?? ''
  try {
    return JSON.parse(line)
  } catch {
    return undefined
  }
}

const REQUIRED_FILES = [
  'package/package.json',
  'package/dist/esm/package.json',
  'package/dist/cjs/package.json',
  'package/dist/esm/index.js',
  'package/dist/cjs/index.js',
  'package/dist/esm/index.d.ts',
  'package/dist/cjs/index.d.ts',
  'package/dist/esm/testing/index.js',
  'package/dist/cjs/testing/index.js',
  'package/dist/esm/testing/index.d.ts',
  'package/dist/cjs/testing/index.d.ts'
]
const DOCUMENT_FILES = ['package/README.md', 'package/CHANGELOG.md', 'package/LICENSE']
const SNAPSHOT_EXCLUDED = new Set(['node_modules', '.git', '.tap', 'dist', 'coverage'])

// A request under the service prefix, and the path the upstream must receive for it.
const PROXIED = { status: 200, upstreamUrl: '/42?expand=true' }

t.setTimeout(240_000)

const work = await mkdtemp(join(tmpdir(), 'fastify-gateway-pack-'))
t.teardown(() => rm(work, { recursive: true, force: true }))
const scratch = join(work, 'consumer')
const { version } = JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')) as { version: string }

let tarball: string | undefined
let installed = false

await t.test('npm pack builds a tarball holding only the published files', async (t) => {
  const source = join(work, 'source')
  const destination = join(work, 'pack')
  await mkdir(destination)
  await cp(repo, source, { recursive: true, filter: (path) => !SNAPSHOT_EXCLUDED.has(relative(repo, path)) })
  await symlink(join(repo, 'node_modules'), join(source, 'node_modules'), 'dir')

  const pack = await run('npm', ['pack', '--json', '--pack-destination', destination], source, 120_000)
  if (!t.equal(pack.code, 0, 'npm pack (with its prepack build) succeeds', { stderr: pack.stderr, signal: pack.signal })) return
  const [report] = JSON.parse(pack.stdout) as Array<{ filename: string }>
  tarball = join(destination, report.filename)

  const listing = await run('tar', ['-tzf', tarball], work, 30_000)
  t.equal(listing.code, 0, 'the tarball can be listed', { stderr: listing.stderr })
  const files = listing.stdout.split('\n').filter((line) => line !== '' && !line.endsWith('/'))

  const allowed = new Set(['package/package.json', ...DOCUMENT_FILES])
  t.same(files.filter((file) => !allowed.has(file) && !file.startsWith('package/dist/')), [],
    'every file is package.json, README.md, CHANGELOG.md, LICENSE or under dist/')
  t.same(REQUIRED_FILES.filter((file) => !files.includes(file)), [],
    'the ESM and CommonJS entry points of "." and "./testing", with types, are present')
  t.same(DOCUMENT_FILES.filter((file) => !files.includes(file)), [],
    'README.md, CHANGELOG.md and LICENSE are present')
})

await t.test('the tarball installs into a fresh project', async (t) => {
  if (tarball === undefined) return t.fail('no tarball to install (npm pack failed)')
  const typesNode = JSON.parse(await readFile(join(repo, 'node_modules/@types/node/package.json'), 'utf8')) as { version: string }
  await mkdir(scratch)
  await writeFile(join(scratch, 'package.json'), JSON.stringify({
    name: 'fastify-gateway-consumer',
    version: '0.0.0',
    private: true,
    type: 'module',
    dependencies: { 'fastify-gateway': `file:${tarball}`, fastify: '^5.0.0' },
    // The repo's own version, so the warm npm cache has it.
    devDependencies: { '@types/node': typesNode.version }
  }, null, 2))

  const install = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], scratch, 180_000)
  if (!t.equal(install.code, 0, 'npm install succeeds', { stderr: install.stderr, signal: install.signal })) return
  const manifest = JSON.parse(await readFile(join(scratch, 'node_modules/fastify-gateway/package.json'), 'utf8')) as { version: string }
  installed = t.equal(manifest.version, version, 'fastify-gateway is installed from the tarball')
})

await t.test('an ESM consumer proxies through the gateway', async (t) => {
  if (!installed) return t.fail('the package is not installed')
  await copyFile(join(fixtures, 'consumer.mjs'), join(scratch, 'consumer.mjs'))
  const result = await run(node, ['consumer.mjs'], scratch, 30_000)
  t.equal(result.code, 0, 'consumer.mjs exits by itself, with 0', { stderr: result.stderr, signal: result.signal })
  t.same(lastJsonLine(result.stdout), PROXIED, 'import gateway from "fastify-gateway" proxies the request')
})

await t.test('a CommonJS consumer proxies through the gateway', async (t) => {
  if (!installed) return t.fail('the package is not installed')
  await copyFile(join(fixtures, 'consumer.cjs'), join(scratch, 'consumer.cjs'))
  const result = await run(node, ['consumer.cjs'], scratch, 30_000)
  t.equal(result.code, 0, 'consumer.cjs exits by itself, with 0', { stderr: result.stderr, signal: result.signal })
  t.same(lastJsonLine(result.stdout), { named: PROXIED, module: PROXIED, defaultIsNamed: true },
    'require("fastify-gateway").gateway and require("fastify-gateway") itself both register the gateway')
})

// The same consumer.ts, type-checked as an ES module and as CommonJS (a package without "type"),
// so that both the `import` and the `require` types of the exports map are used.
for (const flavour of [
  { name: 'ESM', dir: 'ts-esm', type: 'module', types: 'dist/esm/index.d.ts' },
  { name: 'CommonJS', dir: 'ts-cjs', type: undefined, types: 'dist/cjs/index.d.ts' }
]) {
  await t.test(`a ${flavour.name} TypeScript consumer type-checks (module nodenext, strict)`, async (t) => {
    if (!installed) return t.fail('the package is not installed')
    const dir = join(scratch, flavour.dir)
    await mkdir(dir)
    await writeFile(join(dir, 'package.json'), JSON.stringify({ private: true, type: flavour.type }))
    await copyFile(join(fixtures, 'consumer.ts.fixture'), join(dir, 'consumer.ts'))
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2023',
        strict: true,
        noEmit: true,
        types: ['node'],
        // Check our .d.ts files too: a consumer must not need any of our dev dependencies.
        skipLibCheck: false
      },
      files: ['consumer.ts']
    }, null, 2))

    const check = await run(tsc, ['-p', dir, '--listFiles'], scratch, 60_000)
    const diagnostics = check.stdout.split('\n').filter((line) => line.includes('error TS'))
    t.equal(check.code, 0, 'tsc reports no error (the @ts-expect-error lines prove the config.gateway augmentation)',
      { diagnostics, stderr: check.stderr, signal: check.signal })
    t.ok(check.stdout.includes(join('node_modules/fastify-gateway', flavour.types)), `the types come from ${flavour.types}`)
  })
}

// examples/minimal-gateway/README.md, "Copy it into your project": these steps, and nothing else.
const STARTER = join(repo, 'examples', 'minimal-gateway')
const STARTER_IMPORTS: Array<[string, string]> = [
  ["'../../lib/index.js'", "'fastify-gateway'"],
  ["'../../lib/testing/index.js'", "'fastify-gateway/testing'"]
]

await t.test('a project made from the starter README passes the starter\'s tests', async (t) => {
  if (tarball === undefined) return t.fail('no tarball to install (npm pack failed)')
  const project = join(work, 'my-gateway')
  const devVersion = async (name: string): Promise<string> =>
    (JSON.parse(await readFile(join(repo, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version
  await mkdir(join(project, 'src'), { recursive: true })
  await writeFile(join(project, 'package.json'), JSON.stringify({
    name: 'my-gateway',
    version: '0.0.0',
    private: true,
    type: 'module',
    scripts: { test: 'tsc -p . && tap' },
    tap: { 'disable-coverage': true },
    dependencies: { 'fastify-gateway': `file:${tarball}`, fastify: '^5.0.0' },
    // The repo's own versions, so that the warm npm cache has them.
    devDependencies: { tap: await devVersion('tap'), typescript: await devVersion('typescript'), '@types/node': await devVersion('@types/node') }
  }, null, 2))
  await writeFile(join(project, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { target: 'es2023', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, types: ['node'], rootDir: '.', skipLibCheck: true },
    include: ['src']
  }, null, 2))

  const install = await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], project, 180_000)
  if (!t.equal(install.code, 0, 'npm install succeeds', { stderr: install.stderr, signal: install.signal })) return

  const copied: string[] = []
  for (const file of await readdir(STARTER)) {
    if (!file.endsWith('.ts')) continue
    let source = await readFile(join(STARTER, file), 'utf8')
    for (const [from, to] of STARTER_IMPORTS) source = source.replaceAll(from, to)
    await writeFile(join(project, 'src', file), source)
    copied.push(file)
    t.notOk(source.includes('../../'), `${file} refers to nothing outside the project once the imports are renamed`)
  }
  t.ok(copied.includes('gateway.test.ts') && copied.includes('policy.test.ts'), 'the starter\'s tests are copied', { copied })

  const typecheck = await run(join(project, 'node_modules', '.bin', 'tsc'), ['-p', '.'], project, 60_000)
  t.equal(typecheck.code, 0, 'the copied starter type-checks against the published types (strict, nodenext)',
    { diagnostics: typecheck.stdout.split('\n').filter((line) => line.includes('error TS')), stderr: typecheck.stderr })

  const tests = await run(join(project, 'node_modules', '.bin', 'tap'), ['--reporter=tap'], project, 120_000)
  const summary = /# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(tests.stdout)
  t.equal(tests.code, 0, 'the starter\'s tests pass in the new project', { tail: tests.stdout.slice(-4_000), stderr: tests.stderr, signal: tests.signal })
  t.ok(summary !== null && Number(summary[1]) > 100 && summary[1] === summary[2], 'every assertion passed', { summary: summary?.[0] })
  for (const file of ['src/gateway.test.ts', 'src/policy.test.ts']) t.match(tests.stdout, new RegExp(`ok \\d+ - ${file}`), `${file} ran and passed`)
})
