/**
 * `node benchmarks/history/compact-profile.mjs <dir> <puts> [--build]`: a
 * helper for profiling `compact()` alone (run it under `node --cpu-prof`).
 * With --build it writes a store of `puts` single-key puts over
 * `puts / 10` keys under <dir>/base; without, it copies <dir>/base to
 * <dir>/run and times one `compact()` of the copy while a loop reads and
 * writes it, as the compact row of index.mjs does (`COMPACT_LOAD=0`: no
 * loop, so the CPU time printed is the compaction's alone: a figure that
 * holds up better than wall time on a shared machine).
 */

import { cp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { createCRDTDatastore } from '../../dist/src/index.js'
import { makeValues, now, round } from '../lib/common.mjs'
import { makeKeys } from '../lib/stores.mjs'

const [dir, putsArg] = process.argv.slice(2)
const puts = Number(putsArg)
const build = process.argv.includes('--build')
const live = Math.max(1, Math.floor(puts / 10))
const path = join(dir, build ? 'base' : 'run')
if (!build) {
  await rm(path, { recursive: true, force: true })
  await cp(join(dir, 'base'), path, { recursive: true })
}
const datastore = new LevelDatastore(join(path, 'datastore'))
const blockstore = new LevelBlockstore(join(path, 'blocks'))
await datastore.open()
await blockstore.open()
const store = await createCRDTDatastore({ datastore, blockstore }, { namespace: '/crdt', repairInterval: 0 })
const keys = makeKeys(live)
const values = makeValues(puts)
try {
  if (build) {
    const t0 = now()
    for (let i = 0; i < puts; i++) await store.put(keys[i % live], values[i])
    process.stdout.write(`built ${puts} puts in ${round(now() - t0)} ms\n`)
  } else {
    let stop = false
    let ops = 0
    const load = (async () => {
      for (let i = 0; !stop && i < 10_000_000 && process.env.COMPACT_LOAD !== '0'; i++) {
        await store.get(keys[i % live])
        await store.put(keys[(i * 7) % live], values[i % puts])
        ops += 2
      }
    })()
    const t0 = now()
    const cpu0 = process.cpuUsage()
    const result = await store.compact()
    const ms = now() - t0
    const cpu = process.cpuUsage(cpu0)
    stop = true
    await load
    process.stdout.write(`compact() ${round(ms)} ms: removed ${result.removed.blocks} blocks, ${result.removed.entries} entries; ${ops} reads+writes meanwhile; CPU ${round((cpu.user + cpu.system) / 1000)} ms\n`)
  }
} finally {
  await store.stop()
  await datastore.close()
  await blockstore.close()
}
