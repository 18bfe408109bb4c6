/**
 * Helpers shared by every benchmark. Node built-ins only, so the peer
 * packages under benchmarks/peers/ can import this file too.
 *
 * A benchmark module exports `run({ quick })` resolving to a list of results
 * `{ name, value, unit, baseline?, ratio?, note?, error? }`, and calls
 * `main(import.meta.url, run)` so it can also be run on its own:
 *
 *   node benchmarks/<name>/index.mjs [--quick] [--out results.json]
 */

import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'

export const VALUE_SIZE = 100

export function parseArgs (argv = process.argv.slice(2)) {
  const out = { quick: false, out: undefined }
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') out.quick = true
    else if (argv[i] === '--out') out.out = argv[++i]
  }
  return out
}

/** `/bench/k00000042`: fixed-width keys, so every store sorts them the same */
export function keyName (i) {
  return `/bench/k${String(i).padStart(8, '0')}`
}

/** Makes `count` random values of VALUE_SIZE bytes up front so timing covers storing only */
export function makeValues (count, size = VALUE_SIZE) {
  const pool = randomBytes(count * size)
  const out = new Array(count)
  for (let i = 0; i < count; i++) out[i] = pool.subarray(i * size, (i + 1) * size)
  return out
}

/** A fresh directory under the OS temp dir; `cleanup()` removes it */
export async function tempDir (label) {
  const dir = await mkdtemp(join(tmpdir(), `datastore-crdt-bench-${label}-`))
  return { dir, cleanup: async () => rm(dir, { recursive: true, force: true }) }
}

/**
 * Runs `fn` on a store `open(dir)` makes in a fresh temp dir, then closes
 * the store and removes the dir
 */
export async function withTempStore (label, open, fn) {
  const tmp = await tempDir(label)
  try {
    const store = await open(tmp.dir)
    try {
      return await fn(store)
    } finally {
      await store.close().catch(() => {})
    }
  } finally {
    await tmp.cleanup()
  }
}

/** The rows `fn` returns, or one row carrying its error */
export async function attempt (name, unit, fn) {
  try {
    return await fn()
  } catch (err) {
    return [{ name, value: null, unit, error: err.message }]
  }
}

export function now () {
  return performance.now()
}

/** Rate per second of `count` things done in `ms` milliseconds */
export function rate (count, ms) {
  return ms > 0 ? count / (ms / 1000) : 0
}

export function round (n, digits = 0) {
  if (n == null || !Number.isFinite(n)) return n
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** Polls `fn` until it returns true; rejects after `timeout` ms */
export async function waitFor (fn, timeout, what, interval = 50) {
  const deadline = Date.now() + timeout
  while (Date.now() < deadline) {
    if (await fn()) return
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

/** Peak resident set size of this process as the kernel recorded it (VmHWM), in bytes */
export async function peakRss () {
  try {
    const status = await readFile('/proc/self/status', 'utf8')
    const m = /VmHWM:\s+(\d+) kB/.exec(status)
    if (m != null) return Number(m[1]) * 1024
  } catch {}
  return undefined
}

/**
 * Samples this process's RSS every `interval` ms until `stop()`; returns
 * the largest sample and the kernel's peak (VmHWM) at stop time.
 */
export function rssSampler (interval = 100) {
  let max = process.memoryUsage()
  const sample = () => {
    const m = process.memoryUsage()
    if (m.rss > max.rss) max = m
  }
  const timer = setInterval(sample, interval)
  timer.unref()
  return {
    /** `atPeak`: process.memoryUsage() (bytes) at the largest sample */
    async stop () {
      clearInterval(timer)
      sample()
      return { sampled: max.rss, hwm: await peakRss(), atPeak: max }
    }
  }
}

/** "heap 120 MB used of 180, external 40" from process.memoryUsage() */
export function describeMemory (m) {
  if (m == null) return ''
  return `at that sample V8 heap ${Math.round(m.heapUsed / MB)} MB used of ${Math.round(m.heapTotal / MB)}, external ${Math.round(m.external / MB)} MB (array buffers ${Math.round(m.arrayBuffers / MB)})`
}

export const MB = 1024 * 1024

function fmt (v) {
  if (v == null) return '-'
  if (typeof v !== 'number') return String(v)
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US')
  if (Math.abs(v) >= 10) return v.toFixed(1)
  return v.toFixed(2)
}

/** Prints results as an aligned table */
export function printTable (results, log = console.log) {
  const rows = [['benchmark', 'value', 'unit', 'baseline', 'ratio', 'note']]
  for (const r of results) {
    rows.push([
      r.name,
      r.error != null ? 'n/a' : fmt(r.value),
      r.unit ?? '',
      fmt(r.baseline),
      r.ratio == null ? '-' : r.ratio.toFixed(2),
      r.error != null ? `ERROR: ${r.error}` : (r.note ?? '')
    ])
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map(row => c === 5 ? 0 : String(row[c]).length)))
  for (const [i, row] of rows.entries()) {
    log(row.map((cell, c) => c === 5 ? cell : (c === 1 || c === 3 || c === 4 ? String(cell).padStart(widths[c]) : String(cell).padEnd(widths[c]))).join('  ').trimEnd())
    if (i === 0) log(widths.map(w => '-'.repeat(w)).join('  '))
  }
}

/** A result with a baseline: ratio = value / baseline */
export function withRatio (result, baseline) {
  return { ...result, baseline: round(baseline, 1), ratio: baseline > 0 ? round(result.value / baseline, 3) : undefined }
}

/**
 * Runs `run` when the module at `url` is the entry point: parses the
 * arguments, prints the table and writes the results to `--out` if given.
 */
export function main (url, run) {
  if (process.argv[1] == null || fileURLToPath(url) !== process.argv[1]) return
  const args = parseArgs()
  run(args).then(async results => {
    printTable(results)
    if (args.out != null) await writeFile(args.out, JSON.stringify(results, null, 2) + '\n')
    process.exit(0)
  }, async err => {
    console.error(err)
    if (args.out != null) await writeFile(args.out, JSON.stringify([{ name: url, value: null, error: String(err?.message ?? err) }], null, 2) + '\n')
    process.exit(1)
  })
}
