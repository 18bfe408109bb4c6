import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { createCRDTDatastore } from '../src/index.js'
import { enc, memoryReplica } from './fixtures/stores.js'

describe('bad input at the API', () => {
  it('refuses invalid options with InvalidOptionsError', async () => {
    const components = { datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() }
    for (const init of [{ numWorkers: 0 }, { numWorkers: 1.5 }, { rebroadcastInterval: 0 }, { dagSyncerTimeout: -1 }, { maxBatchDeltaSize: 0 }, { repairInterval: -5 }, { broadcastBatchDelay: -1 }, { namespace: 'no-slash' }, { multiHeadProcessing: 'yes' as any }]) {
      await expect(createCRDTDatastore(components, init)).to.eventually.be.rejected.with.property('name', 'InvalidOptionsError')
    }
    await expect(createCRDTDatastore({ datastore: undefined as any, blockstore: new MemoryBlockstore() })).to.eventually.be.rejected.with.property('message').that.matches(/datastore/)
    await expect(createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: {} as any })).to.eventually.be.rejected.with.property('message').that.matches(/blockstore/)
  })

  it('refuses values that are not Uint8Array and keys that are not Keys, writing nothing', async () => {
    const { store } = await memoryReplica()
    await expect(store.put(new Key('/a'), 'string' as any)).to.eventually.be.rejected.with.property('name', 'InvalidValueError')
    await expect(store.put('/a' as any, enc('v'))).to.eventually.be.rejected.with.property('name', 'InvalidKeyError')
    expect(() => { store.batch().put(new Key('/a'), null as any) }).to.throw().with.property('name', 'InvalidValueError')
    await expect(store.put(new Key('/a'), enc('v'), { dagName: '/bad/' })).to.eventually.be.rejected.with.property('name', 'InvalidOptionsError')
    expect(store.heads()).to.have.lengthOf(0)
    expect(await all(store.queryKeys({}))).to.have.lengthOf(0)
    await store.stop()
  })

  it('throws DatastoreStoppedError on writes after stop(); reads serve the local state', async () => {
    const { store } = await memoryReplica()
    await store.put(new Key('/a'), enc('v'))
    await store.stop()
    await expect(store.put(new Key('/a'), enc('w'))).to.eventually.be.rejected.with.property('name', 'DatastoreStoppedError')
    // Helia reads its datastore before starting it: reads work on a stopped store
    expect(new TextDecoder().decode(await store.get(new Key('/a')))).to.equal('v')
    expect(() => store.batch()).to.throw().with.property('name', 'DatastoreStoppedError')
    await store.stop() // twice is fine
  })

  it('missing keys throw NotFoundError', async () => {
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })
    await expect(store.get(new Key('/missing'))).to.eventually.be.rejected.with.property('name', 'NotFoundError')
    await store.stop()
  })

  it('rejects calls with an aborted signal', async () => {
    const { store } = await memoryReplica()
    const signal = AbortSignal.abort()
    await expect(store.put(new Key('/a'), enc('v'), { signal })).to.eventually.be.rejected.with.property('message').that.include('abort')
    await expect(store.repair({ signal })).to.eventually.be.rejected.with.property('message').that.include('abort')
    expect(store.heads()).to.have.lengthOf(0)
    await store.stop()
  })
})
