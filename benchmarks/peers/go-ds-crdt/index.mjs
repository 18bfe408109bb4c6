/**
 * Peer benchmark: go-ds-crdt v0.6.8, the Go original, on the same workloads
 * and sizes as datastore-crdt's own benchmarks (see README.md here). The
 * work is done by the Go program in this folder (main.go); this module
 * builds it (build.mjs), runs it, and turns its rows into peer rows
 * named `go-ds-crdt: <row>`. When Go is missing or the build fails, every
 * row says `not run: <why>`.
 *
 *   node benchmarks/peers/go-ds-crdt/index.mjs [--quick] [--out file.json]
 */

import { spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildGoPeer } from './build.mjs'
import { main, round } from '../../lib/common.mjs'

export const PEER = 'go-ds-crdt'

/** The rows the Go program reports, with their units */
export const ROWS = [
  ['batched writes (1,000/batch)', 'keys/s'],
  ['unbatched puts', 'puts/s'],
  ['unbatched puts, libp2p replica', 'puts/s'],
  ['replication A→B (TCP)', 'keys/s'],
  ['peak RSS, replicating B', 'MB'],
  ['replication A→B, single puts', 'keys/s'],
  ['peak RSS, replicating B (single puts)', 'MB'],
  ['deep catch-up', 's'],
  ['deep catch-up rate', 'keys/s'],
  ['peak RSS, catching-up B', 'MB'],
  ['listing: query() keys+values', 'keys/s']
]

const peerRow = r => ({ ...r, peer: PEER, name: `${PEER}: ${r.name}` })

/** Every row, each saying why it was not run */
export function notRun (why) {
  return ROWS.map(([name, unit]) => peerRow({ name, value: null, unit, error: `not run: ${why}` }))
}

function exec (binary, argv) {
  return new Promise(resolve => {
    const child = spawn(binary, argv, { cwd: tmpdir(), stdio: ['ignore', 'inherit', 'inherit'] })
    child.once('error', err => resolve({ error: err.message }))
    child.once('exit', code => resolve({ code }))
  })
}

export async function run ({ quick = false } = {}) {
  const built = await buildGoPeer()
  if (built.error != null) return notRun(built.error)
  const out = join(tmpdir(), `datastore-crdt-bench-go-${process.pid}.json`)
  try {
    const ran = await exec(built.binary, ['-out', out, ...(quick ? ['-quick'] : [])])
    let rows
    try {
      rows = JSON.parse(await readFile(out, 'utf8'))
    } catch {
      return notRun(ran.error ?? `the Go program exited with code ${ran.code} and no results`)
    }
    return rows.map(r => peerRow({
      ...r,
      value: r.value == null ? null : round(r.value, r.value >= 100 ? 0 : 1),
      baseline: r.baseline == null ? undefined : round(r.baseline, 1),
      ratio: r.ratio == null ? undefined : round(r.ratio, 3)
    }))
  } finally {
    await rm(out, { force: true })
  }
}

main(import.meta.url, run)
