/**
 * Runs every benchmark, each in its own process, then the peers (OrbitDB,
 * js-ds-crdt, go-ds-crdt) on the same workloads; prints one table and writes
 * benchmarks/results.json: a list of { name, value, unit, baseline?, ratio? }
 * (plus note / error / peer / target where they apply).
 *
 *   npm run bench                   # builds, then the full run (~25–40 min)
 *   npm run bench -- --quick        # ~10x smaller (~5 min)
 *   node benchmarks/run.mjs [--quick] [--only name,name] [--no-peers]
 *
 * Rows "vs <peer>: …" compare this package with a peer on one workload:
 * value = ours, baseline = the peer's, ratio = ours / peer (for RSS, lower
 * is better). Numbers are from a shared 2-core machine: expect noise.
 */

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { printTable, round } from './lib/common.mjs'
import { buildGoPeer } from './peers/go-ds-crdt/build.mjs'
import { notRun as goNotRun } from './peers/go-ds-crdt/index.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = dirname(HERE)

/** Our benchmarks, in run order, with a time limit each (full run; --quick gets a fifth) */
const BENCHMARKS = [
  { name: 'batched-writes', limitS: 300 },
  { name: 'unbatched-puts', limitS: 240 },
  { name: 'replication', limitS: 600 },
  { name: 'deep-catch-up', limitS: 1200 },
  { name: 'listing', limitS: 600 },
  { name: 'history', limitS: 900 },
  { name: 'browser-bundle', limitS: 120 },
  { name: 'trusted', limitS: 600 }
]
/** The peers: npm packages installed on first use, or a Go program built on each run (cached by Go) */
const PEERS = [
  { name: 'orbitdb', limitS: 600, setup: 'npm' },
  { name: 'js-ds-crdt', limitS: 600, setup: 'npm' },
  { name: 'go-ds-crdt', limitS: 1500, setup: 'go' }
]
/** Time limit of a Go peer's build: the first one downloads modules and compiles libp2p */
const GO_BUILD_LIMIT_S = 900

/** Targets from issue #6 (and #18 for the browser bundle): [our row, comparison, bound] */
const TARGETS = {
  'batched writes (1,000/batch)': { min: 50_000, minRatio: 0.25 },
  'unbatched puts': { min: 3_000 },
  'replication A→B (TCP)': { min: 20_000 },
  'listing: query() keys+values': { minRatio: 0.5 },
  'peak RSS, replicating B': { max: 300 },
  'peak RSS, catching-up B': { max: 300 },
  'browser bundle: core, minified': { max: 250 },
  // issue #17: trusted mode costs at most a fifth
  'single puts A→B, trusted mode': { minRatio: 0.8 },
  'catch-up A→B, trusted mode': { minRatio: 0.8 },
  // issue #16
  'history: churn, compacted vs fresh': { max: 3 },
  'history: join from snapshot vs full sync': { max: 0.2 },
  'history: compact() with reads and writes': { max: 10 }
}

/** Which of our rows a peer row is compared with (peer rows are named "<peer>: <row>") */
const COMPARE = {
  'batched writes (1,000/batch)': 'batched writes (1,000/batch)',
  'unbatched puts': 'unbatched puts, Helia replica',
  'listing: query() keys+values': 'listing: query() keys+values',
  'replication A→B, single puts': 'replication A→B, single puts',
  'peak RSS, replicating B': 'peak RSS, replicating B (single puts)',
  'deep catch-up rate': 'deep catch-up rate',
  'peak RSS, catching-up B': 'peak RSS, catching-up B'
}

/**
 * go-ds-crdt runs our workloads at our sizes under our row names, so its
 * rows compare with ours of the same name, except these
 */
const COMPARE_GO = {
  'unbatched puts, libp2p replica': 'unbatched puts, Helia replica'
}

/** Our row name a peer's metric compares with (undefined: none) */
function ourRowFor (peer, metric) {
  if (peer === 'go-ds-crdt') return COMPARE_GO[metric] ?? metric
  return COMPARE[metric]
}

function parse (argv) {
  const args = { quick: false, only: undefined, peers: true }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') args.quick = true
    else if (argv[i] === '--no-peers') args.peers = false
    else if (argv[i] === '--only') args.only = new Set(argv[++i].split(','))
  }
  return args
}

/** Runs a command with a time limit; resolves with its exit code (null when killed) */
function exec (cmd, argv, { cwd = ROOT, limitS }) {
  return new Promise(resolve => {
    const child = spawn(cmd, argv, { cwd, stdio: ['ignore', 'inherit', 'inherit'], detached: true })
    const timer = setTimeout(() => {
      console.error(`! ${argv.join(' ')}: over ${limitS} s, killing it`)
      try { process.kill(-child.pid, 'SIGKILL') } catch {}
    }, limitS * 1000)
    child.on('exit', code => { clearTimeout(timer); resolve(code) })
  })
}

async function runOne (script, { quick, limitS, label }) {
  const out = join(tmpdir(), `datastore-crdt-bench-${process.pid}-${label.replace(/\W+/g, '_')}.json`)
  const argv = [script, '--out', out, ...(quick ? ['--quick'] : [])]
  const t0 = Date.now()
  console.log(`\n=== ${label}${quick ? ' (quick)' : ''}`)
  const code = await exec(process.execPath, argv, { limitS })
  let results
  try {
    results = JSON.parse(await readFile(out, 'utf8'))
  } catch {
    results = [{ name: label, value: null, unit: '', error: code == null ? `killed after ${limitS} s` : `exited with code ${code} and no results` }]
  }
  await rm(out, { force: true })
  console.log(`=== ${label}: ${round((Date.now() - t0) / 1000)} s`)
  return results
}

async function ensurePeer (name) {
  const dir = join(HERE, 'peers', name)
  if (existsSync(join(dir, 'node_modules'))) return undefined
  console.log(`\n=== installing peer ${name} (npm install --prefix benchmarks/peers/${name})`)
  const npm = join(dirname(process.execPath), 'npm')
  const code = await exec(existsSync(npm) ? npm : 'npm', ['install', '--prefix', dir, '--no-audit', '--no-fund'], { limitS: 600 })
  return code === 0 ? undefined : `npm install --prefix benchmarks/peers/${name} failed (exit ${code})`
}

function checkTargets (results) {
  for (const r of results) {
    const t = TARGETS[r.name]
    if (t == null || r.value == null) continue
    const misses = []
    if (t.min != null && r.value < t.min) misses.push(`< ${t.min}`)
    if (t.max != null && r.value > t.max) misses.push(`> ${t.max}`)
    if (t.minRatio != null && r.ratio != null && r.ratio < t.minRatio) misses.push(`ratio < ${t.minRatio}`)
    r.target = [t.min != null ? `≥ ${t.min}` : null, t.max != null ? `≤ ${t.max}` : null, t.minRatio != null ? `ratio ≥ ${t.minRatio}` : null].filter(Boolean).join(', ')
    r.met = misses.length === 0
  }
}

function comparisons (ours, peers) {
  const byName = new Map(ours.map(r => [r.name, r]))
  const out = []
  for (const p of peers) {
    const metric = p.name.slice(p.name.indexOf(': ') + 2)
    const mine = byName.get(ourRowFor(p.peer, metric))
    if (mine == null) continue
    const row = { name: `vs ${p.peer}: ${metric}`, value: mine.value, unit: mine.unit, baseline: p.value }
    if (p.value == null || mine.value == null) {
      row.ratio = undefined
      row.note = `no ratio: ${p.error ?? mine.error ?? 'missing value'}`
    } else {
      row.ratio = p.value > 0 ? round(mine.value / p.value, 2) : undefined
      row.note = `ours: ${mine.name}; peer: ${p.note ?? ''}`
      if (mine.ratio != null && p.ratio != null) row.note += `; each to its own raw LevelDB: ours ${mine.ratio}, peer ${p.ratio}`
    }
    out.push(row)
  }
  return out
}

async function main () {
  const args = parse(process.argv.slice(2))
  if (!existsSync(join(ROOT, 'dist', 'src', 'index.js'))) {
    console.error('dist/ is missing: build first (npm run build, or npm run bench)')
    process.exit(1)
  }
  const started = Date.now()
  const ours = []
  for (const b of BENCHMARKS) {
    if (args.only != null && !args.only.has(b.name)) continue
    ours.push(...await runOne(join(HERE, b.name, 'index.mjs'), { quick: args.quick, limitS: args.quick ? Math.ceil(b.limitS / 5) : b.limitS, label: b.name }))
  }
  checkTargets(ours)

  const peers = []
  if (args.peers) {
    for (const p of PEERS) {
      if (args.only != null && !args.only.has(p.name)) continue
      if (p.setup === 'go') {
        console.log(`\n=== building peer ${p.name} (go build in benchmarks/peers/${p.name}; the first build downloads modules)`)
        const built = await buildGoPeer({ limitS: GO_BUILD_LIMIT_S })
        if (built.error != null) {
          peers.push(...goNotRun(built.error))
          continue
        }
      }
      const failed = p.setup === 'npm' ? await ensurePeer(p.name) : undefined
      if (failed != null) {
        peers.push({ name: `${p.name}: (all)`, peer: p.name, value: null, unit: '', error: failed })
        continue
      }
      peers.push(...await runOne(join(HERE, 'peers', p.name, 'index.mjs'), { quick: args.quick, limitS: args.quick ? Math.ceil(p.limitS / 4) : p.limitS, label: `peer ${p.name}` }))
    }
  }

  const results = [...ours, ...peers, ...comparisons(ours, peers)]
  console.log(`\nResults (${args.quick ? 'quick' : 'full'} run, ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${round((Date.now() - started) / 1000)} s):\n`)
  printTable(results.map(r => r.met === false ? { ...r, note: `MISSES target ${r.target}; ${r.note ?? ''}` } : r))
  await writeFile(join(HERE, 'results.json'), JSON.stringify(results, null, 2) + '\n')
  console.log('\nwrote benchmarks/results.json')
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
