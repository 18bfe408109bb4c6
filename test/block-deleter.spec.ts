/**
 * The block deleter compaction uses (src/snapshot/block-deleter.ts):
 * LevelDB batches of deletes for a blockstore-level store, checked through
 * the store; the store's own deletes for anything else, wrappers included.
 */

import { expect } from 'aegir/chai'
import { LevelBlockstore } from 'blockstore-level'
import { base32upper } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { identity } from 'multiformats/hashes/identity'
import { sha256 } from 'multiformats/hashes/sha2'
import { blockDeleter, DELETE_BATCH } from '../src/snapshot/block-deleter.js'
import { tempDir } from './fixtures/stores.js'
import type { DeletingBlockstore } from '../src/snapshot/block-deleter.js'
import type { Logger } from '@libp2p/interface'

/** A logger that records its messages */
function recordingLog (): Logger & { lines: string[] } {
  const lines: string[] = []
  const log = Object.assign((format: string) => { lines.push(format) }, {
    enabled: true,
    lines,
    error: (format: string) => { lines.push(format) },
    trace: () => {},
    newScope: () => log
  })
  return log as unknown as Logger & { lines: string[] }
}

async function blocks (n: number, tag: string): Promise<Array<{ cid: CID, bytes: Uint8Array }>> {
  const out = []
  for (let i = 0; i < n; i++) {
    const bytes = new TextEncoder().encode(`${tag} ${i}`)
    out.push({ cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes })
  }
  return out
}

async function present (store: { has(cid: CID): Promise<boolean> | boolean }, cids: CID[]): Promise<number> {
  let n = 0
  for (const cid of cids) if (await store.has(cid)) n++
  return n
}

describe('block deleter', function () {
  this.timeout(30_000)

  it('deletes a LevelBlockstore\'s blocks by LevelDB batches (more than one batch; absent and identity CIDs are harmless) and leaves the others', async () => {
    const dir = await tempDir('block-deleter')
    const store = new LevelBlockstore(dir.path)
    await store.open()
    try {
      const doomed = await blocks(DELETE_BATCH + 300, 'doomed')
      const kept = await blocks(50, 'kept')
      for (const { cid, bytes } of [...doomed, ...kept]) await store.put(cid, bytes)
      const absent = (await blocks(1, 'never stored'))[0].cid
      const inline = CID.createV1(raw.code, identity.digest(new Uint8Array([1, 2, 3])))
      const db = store.db as unknown as { batch(ops: unknown[]): Promise<void> }
      const batch = db.batch.bind(db)
      let batches = 0
      db.batch = async (ops) => { batches++; await batch(ops) }

      const deleter = blockDeleter(store, recordingLog())
      expect(deleter.direct).to.equal(true)
      // two runs of DELETE_BATCH at most (the identity CID is skipped), each one LevelDB batch
      const removed = await deleter.delete([absent, inline, ...doomed.map(b => b.cid)])
      expect(removed).to.equal(doomed.length + 1)
      expect(batches).to.equal(2)
      expect(deleter.direct).to.equal(true)
      expect(await present(store, doomed.map(b => b.cid))).to.equal(0)
      expect(await present(store, kept.map(b => b.cid))).to.equal(kept.length)
      // deleting again: nothing there, nothing changes
      expect(await deleter.delete(doomed.slice(0, 3).map(b => b.cid))).to.equal(3)
      expect(await present(store, kept.map(b => b.cid))).to.equal(kept.length)
    } finally {
      await store.close()
      await dir.remove()
    }
  })

  it('a store that looks like blockstore-level but keeps blocks under other keys gets its blocks deleted one by one, and no more direct batches', async () => {
    const dir = await tempDir('block-deleter')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    try {
      // same LevelDB, same multibase, but every key under a prefix of its own
      const other = await blocks(10, 'other layout')
      const keyOf = (cid: CID): string => `/x${base32upper.encoder.encode(cid.multihash.bytes)}`
      for (const { cid, bytes } of other) await level.db.put(keyOf(cid), bytes)
      const deletes: CID[] = []
      const store: DeletingBlockstore & { db: unknown, base: unknown } = {
        db: level.db,
        base: base32upper,
        get: async function * (cid) { yield await level.db.get(keyOf(cid)) as Uint8Array },
        put: async (cid, bytes) => level.db.put(keyOf(cid), bytes),
        has: async (cid) => (await level.db.get(keyOf(cid))) != null,
        delete: async (cid) => { deletes.push(cid); await level.db.del(keyOf(cid)) }
      }
      const log = recordingLog()
      const deleter = blockDeleter(store, log)
      expect(deleter.direct).to.equal(true)
      expect(await deleter.delete(other.map(b => b.cid))).to.equal(10)
      expect(await present(store, other.map(b => b.cid))).to.equal(0)
      expect(deletes).to.have.length(10)
      expect(deleter.direct).to.equal(false)
      expect(log.lines.join('\n')).to.include('still found')
    } finally {
      await level.close()
      await dir.remove()
    }
  })

  it('deletes through a wrapping blockstore (as Helia\'s, which checks pins), never around it; a store that cannot delete keeps its blocks and says so once', async () => {
    const dir = await tempDir('block-deleter')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    try {
      const some = await blocks(5, 'wrapped')
      for (const { cid, bytes } of some) await level.put(cid, bytes)
      const deletes: CID[] = []
      const wrapper: DeletingBlockstore & { unwrap(): unknown } = {
        unwrap: () => level,
        get: (cid) => level.get(cid),
        put: async (cid, bytes) => level.put(cid, bytes),
        has: async (cid) => level.has(cid),
        delete: async (cid) => { deletes.push(cid); await level.delete(cid) }
      }
      const deleter = blockDeleter(wrapper, recordingLog())
      expect(deleter.direct).to.equal(false)
      expect(await deleter.delete(some.map(b => b.cid))).to.equal(5)
      expect(deletes).to.have.length(5)
      expect(await present(level, some.map(b => b.cid))).to.equal(0)

      const log = recordingLog()
      const readOnly = blockDeleter({ get: (cid) => level.get(cid), put: async () => {}, has: async (cid) => level.has(cid) }, log)
      expect(await readOnly.delete(some.map(b => b.cid))).to.equal(0)
      expect(await readOnly.delete(some.map(b => b.cid))).to.equal(0)
      expect(log.lines.filter(l => l.includes('cannot delete'))).to.have.length(1)
    } finally {
      await level.close()
      await dir.remove()
    }
  })
})
