/**
 * Persistence on LevelDB: reopening keeps values and heads, a clean stop
 * clears the bad-shutdown marker, and a process that dies without stop()
 * leaves a store that opens dirty and is repaired.
 */

import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { LevelBlockstore } from 'blockstore-level'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { createCRDTDatastore } from '../src/index.js'
import { dec, enc, levelReplica, tempDir } from './fixtures/stores.js'
import type { AbortOptions } from 'interface-store'

const crashWriter = fileURLToPath(new URL('./fixtures/crash-writer.js', import.meta.url))

describe('persistence on LevelDB', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  beforeEach(async () => { dir = await tempDir('crdt-persist') })
  afterEach(async () => { await dir.remove() })

  it('reopens with values, heads and heights intact', async () => {
    const first = await levelReplica(dir.path)
    for (let i = 0; i < 10; i++) await first.store.put(new Key(`/p/${i}`), enc(`v${i}`))
    await first.store.delete(new Key('/p/3'))
    const heads = first.store.heads().map(h => [h.cid.toString(), h.height])
    await first.close()

    const second = await levelReplica(dir.path)
    expect(second.store.heads().map(h => [h.cid.toString(), h.height])).to.deep.equal(heads)
    expect(await all(second.store.queryKeys({}))).to.have.lengthOf(9)
    expect(dec(await second.store.get(new Key('/p/9')))).to.equal('v9')
    expect(await second.store.isDirty()).to.equal(false)
    await second.store.put(new Key('/p/10'), enc('v10'))
    expect(second.store.heads()[0].height).to.equal(12)
    await second.close()
  })

  it('writes crdt_version and clears the bad-shutdown marker on a clean stop', async () => {
    const r = await levelReplica(dir.path)
    expect(await r.datastore.has(new Key('/crdt/crdt_version'))).to.equal(true)
    expect(await r.datastore.has(new Key('/crdt/bs'))).to.equal(true)
    await r.store.stop()
    expect(await r.datastore.has(new Key('/crdt/bs'))).to.equal(false)
    await r.datastore.close()
    await r.blockstore.close()
  })

  it('a process that exits without stop() leaves the store dirty; repair cleans it', async () => {
    const child = spawn(process.execPath, [crashWriter, dir.path, '5'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    const code = await new Promise(resolve => child.on('exit', resolve))
    expect(code).to.equal(0)
    expect(out).to.include('written')

    const r = await levelReplica(dir.path, { repairInterval: 0 })
    expect(await r.store.isDirty()).to.equal(true)
    expect(await all(r.store.queryKeys({ prefix: '/crash' }))).to.have.lengthOf(5)
    await r.store.repair()
    expect(await r.store.isDirty()).to.equal(false)
    await r.close()
  })

  it('with the repair loop on, a dirty store repairs itself at start', async () => {
    const child = spawn(process.execPath, [crashWriter, dir.path, '1'], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    const code = await new Promise(resolve => child.on('exit', resolve))
    expect(code, 'the crashing writer exit code').to.equal(0)
    expect(out).to.include('written')

    // the marks the store writes at start are seen on the datastore it is given
    const datastore = new WatchedDatastore(join(dir.path, 'data'))
    const blockstore = new LevelBlockstore(join(dir.path, 'blocks'))
    await datastore.open()
    await blockstore.open()
    try {
      expect(await datastore.has(new Key('/crdt/bs')), 'the bad-shutdown marker the crash left').to.equal(true)
      expect(await datastore.has(new Key('/crdt/d'))).to.equal(false)
      const store = await createCRDTDatastore({ datastore, blockstore }, { repairInterval: 50 })
      try {
        expect(datastore.puts, 'the store opened dirty').to.include('/crdt/d')
        const deadline = Date.now() + 5000
        while (await store.isDirty() && Date.now() < deadline) {
          await new Promise(resolve => setTimeout(resolve, 10))
        }
        expect(await store.isDirty()).to.equal(false)
        expect(datastore.deletes, 'the repair loop cleaned it').to.include('/crdt/d')
        expect(dec(await store.get(new Key('/crash/0')))).to.equal('value-0')
      } finally {
        await store.stop()
      }
    } finally {
      await datastore.close()
      await blockstore.close()
    }
  })
})

/** A LevelDatastore that records the keys put and deleted on it directly (not through batches) */
class WatchedDatastore extends LevelDatastore {
  public readonly puts: string[] = []
  public readonly deletes: string[] = []

  override async put (key: Key, value: Uint8Array, options?: AbortOptions): Promise<Key> {
    this.puts.push(key.toString())
    return super.put(key, value, options)
  }

  override async delete (key: Key, options?: AbortOptions): Promise<void> {
    this.deletes.push(key.toString())
    await super.delete(key, options)
  }
}
