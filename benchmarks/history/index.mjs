/**
 * Bounded history (issue #16), on LevelDB, one process, no network:
 *
 * - churn: 1,000 keys x 1,000 rewrites in batches of 1,000 (one node per
 *   batch; --quick: 1,000 x 100), then one `compact()`. Bytes on disk
 *   (datastore + blockstore directories, after a LevelDB compactRange on
 *   both so deleted entries leave the files) against a fresh store holding
 *   only the final 1,000 keys; the uncompacted size beside it.
 * - join: a source store of 10k live keys whose history is 100k single-key
 *   puts (--quick: 1k / 10k). A fresh replica joins it (a) by a full sync of
 *   the history (the source's heads handed to `receive()`, blocks read from
 *   the source's blockstore as a DAG syncer would) and (b) from a snapshot
 *   (`installSnapshot()` of the source's snapshot, same block source, then
 *   the same heads). Ratio = (b) / (a).
 * - compact() of that source store, timed, while a second task keeps
 *   reading and writing it; the reads and writes done meanwhile are counted.
 */

import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { loadavg } from 'node:os'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { createCRDTDatastore, encodeBroadcast } from '../../dist/src/index.js'
import { main, makeValues, now, round, tempDir } from '../lib/common.mjs'
import { makeKeys } from '../lib/stores.mjs'

async function dirBytes (dir) {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    total += entry.isDirectory() ? await dirBytes(p) : (await stat(p)).size
  }
  return total
}

async function open (label, blockSource) {
  const tmp = await tempDir(label)
  const datastore = new LevelDatastore(join(tmp.dir, 'datastore'))
  const local = new LevelBlockstore(join(tmp.dir, 'blocks'))
  await datastore.open()
  await local.open()
  // blocks missing here are read from `blockSource`, as a DAG syncer would fetch them
  const blockstore = blockSource == null
    ? local
    : {
        put: (cid, bytes, o) => local.put(cid, bytes, o),
        has: (cid, o) => local.has(cid, o),
        delete: (cid, o) => local.delete(cid, o),
        async * get (cid, o) {
          if (await local.has(cid)) { yield * local.get(cid, o); return }
          const chunks = []
          for await (const c of blockSource.get(cid, o)) chunks.push(c)
          await local.put(cid, chunks[0])
          yield chunks[0]
        }
      }
  const store = await createCRDTDatastore({ datastore, blockstore }, { namespace: '/crdt', repairInterval: 0 })
  return {
    store,
    datastore,
    blockstore: local,
    async diskBytes () {
      await datastore.db.compactRange('', '\uffff')
      await local.db.compactRange('', '\uffff')
      return await dirBytes(tmp.dir)
    },
    async close () {
      await store.stop()
      await datastore.close()
      await local.close()
      await tmp.cleanup()
    }
  }
}

async function churn (quick) {
  const keys = makeKeys(1000)
  const rounds = quick ? 100 : 1000
  const s = await open('history-churn')
  const fresh = await open('history-fresh')
  try {
    let values
    for (let r = 0; r < rounds; r++) {
      values = makeValues(keys.length)
      const b = s.store.batch()
      for (let i = 0; i < keys.length; i++) b.put(keys[i], values[i])
      await b.commit()
    }
    const before = await s.diskBytes()
    const t0 = now()
    const result = await s.store.compact()
    const ms = now() - t0
    const after = await s.diskBytes()
    const b = fresh.store.batch()
    for (let i = 0; i < keys.length; i++) b.put(keys[i], values[i])
    await b.commit()
    const freshBytes = await fresh.diskBytes()
    return [
      { name: 'history: churn, compacted vs fresh', value: round(after / freshBytes, 2), unit: 'x', note: `${keys.length} keys x ${rounds} rewrites, batches of 1,000: ${round(after / 1024)} KiB compacted (${round(before / 1024)} KiB before) vs ${round(freshBytes / 1024)} KiB fresh, after one compact(): ${round(ms)} ms, removed ${result.removed.blocks} blocks, ${result.removed.entries} entries` },
      { name: 'history: churn, uncompacted vs fresh', value: round(before / freshBytes, 2), unit: 'x' }
    ]
  } finally {
    await s.close()
    await fresh.close()
  }
}

async function joining (quick) {
  const live = quick ? 1_000 : 10_000
  const puts = quick ? 10_000 : 100_000
  const keys = makeKeys(live)
  const values = makeValues(puts)
  const src = await open('history-src')
  const out = []
  try {
    for (let i = 0; i < puts; i++) await src.store.put(keys[i % live], values[i])
    const heads = encodeBroadcast(src.store.heads().map(h => ({ cid: h.cid, dagName: h.dagName })))

    const full = await open('history-full', src.blockstore)
    let fullMs
    try {
      const t0 = now()
      await full.store.receive(heads)
      fullMs = now() - t0
      if ((await full.store.pendingBranches()).length > 0) throw new Error('full sync left unfinished walks')
    } finally {
      await full.close()
    }

    const snapshot = await src.store.snapshot()
    const joiner = await open('history-join', src.blockstore)
    let joinMs
    try {
      const t0 = now()
      await joiner.store.installSnapshot(snapshot)
      await joiner.store.receive(heads)
      joinMs = now() - t0
      const probe = await joiner.store.get(keys[live - 1])
      if (probe.byteLength === 0) throw new Error('joined replica lacks a key')
    } finally {
      await joiner.close()
    }
    out.push({ name: 'history: join from snapshot vs full sync', value: round(joinMs / fullMs, 3), unit: 'x', note: `${live} live keys, history ${puts} single-key puts: snapshot ${round(joinMs)} ms, full sync ${round(fullMs)} ms (in-process block source, no network)` })

    // compact() while serving reads and writes
    let stop = false
    let ops = 0
    const load = (async () => {
      for (let i = 0; !stop && i < 10_000_000; i++) {
        await src.store.get(keys[i % live])
        await src.store.put(keys[(i * 7) % live], values[i % puts])
        ops += 2
      }
    })()
    const t0 = now()
    const result = await src.store.compact()
    const compactMs = now() - t0
    stop = true
    await load
    out.push({ name: 'history: compact() with reads and writes', value: round(compactMs / 1000, 2), unit: 's', note: `${puts}-node history: removed ${result.removed.blocks} blocks, ${result.removed.entries} entries; ${ops} reads+writes served meanwhile` })
  } finally {
    await src.close()
  }
  return out
}

export async function run ({ quick = false } = {}) {
  // HISTORY_ONLY=churn runs the churn rows alone (the full join rows take minutes)
  const only = process.env.HISTORY_ONLY
  const results = [...(only == null || only === 'churn' ? await churn(quick) : []), ...(only == null || only === 'join' ? await joining(quick) : [])]
  results.push({ name: 'history: load average (1 min)', value: round(loadavg()[0], 2), unit: '' })
  return results
}

main(import.meta.url, run)
