// Dual ESM + CommonJS build with plain tsc (tshy only builds ./src; our sources live in ./lib).
// Each output gets its own package.json "type", and the CommonJS pass compiles lib/ with a
// temporary {"type":"commonjs"} beside it so TypeScript's NodeNext emit produces require().
import { execFileSync } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'

const tsc = (outDir) => execFileSync('tsc', ['-p', 'tsconfig.build.json', '--outDir', outDir], { stdio: 'inherit' })
const dialectMarker = 'lib/package.json'

rmSync('dist', { recursive: true, force: true })
tsc('dist/esm')
writeFileSync('dist/esm/package.json', '{ "type": "module" }\n')
try {
  writeFileSync(dialectMarker, '{ "type": "commonjs" }\n')
  tsc('dist/cjs')
} finally {
  rmSync(dialectMarker, { force: true })
}
writeFileSync('dist/cjs/package.json', '{ "type": "commonjs" }\n')
