import { interfaceDatastoreTests } from 'interface-datastore-tests'
import { levelReplica, memoryReplica, tempDir } from './fixtures/stores.js'
import type { LevelReplica } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'

describe('interface-datastore compliance', () => {
  describe('on MemoryDatastore', () => {
    interfaceDatastoreTests<CRDTDatastore>({
      async setup () {
        return (await memoryReplica()).store
      },
      async teardown (store) {
        await store.stop()
      }
    })
  })

  describe('on LevelDatastore in a temp dir', () => {
    const open = new Map<CRDTDatastore, { replica: LevelReplica, remove(): Promise<void> }>()

    interfaceDatastoreTests<CRDTDatastore>({
      async setup () {
        const dir = await tempDir('crdt-ifc')
        const replica = await levelReplica(dir.path)
        open.set(replica.store, { replica, remove: dir.remove })
        return replica.store
      },
      async teardown (store) {
        const entry = open.get(store)
        open.delete(store)
        await entry?.replica.close()
        await entry?.remove()
      }
    })
  })
})
