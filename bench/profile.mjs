// Summarises the newest .cpuprofile in a folder: the most expensive frames by self time, without
// idle, GC and "(program)". Run by bench/run.mjs with PROFILE=<candidate>, or by hand:
//   node bench/profile.mjs bench/profiles 15
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'

export function topFrames (file, count = 10) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map()
  let busy = 0
  profile.samples.forEach((id, i) => {
    const { functionName, url, lineNumber } = nodes.get(id).callFrame
    if (functionName === '(idle)' || functionName === '(program)' || functionName === '(garbage collector)') return
    const where = url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|lib)\//, '$1/')
    const key = `${functionName || '(anonymous)'} ${where}:${lineNumber + 1}`
    const dt = profile.timeDeltas[i] ?? 0
    self.set(key, (self.get(key) ?? 0) + dt)
    busy += dt
  })
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, count).map(([frame, us]) => ({ frame, share: us / busy }))
}

export function printProfile (dir, count = 15) {
  const files = readdirSync(dir).filter((name) => name.endsWith('.cpuprofile')).map((name) => join(dir, name))
  if (files.length === 0) return
  const newest = files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0]
  console.log(`\nmost expensive frames (self time, share of busy time) in ${newest}:`)
  for (const { frame, share } of topFrames(newest, count)) console.log(`${(share * 100).toFixed(1).padStart(5)} %  ${frame}`)
}

if (import.meta.url === `file://${process.argv[1]}`) printProfile(process.argv[2] ?? 'bench/profiles', Number(process.argv[3] ?? 15))
