/**
 * The shared interface-datastore compliance suite on the CRDT store over
 * `datastore-idb` + `blockstore-idb`, in the browser.
 */

import { interfaceDatastoreTests } from 'interface-datastore-tests'
import { idbReplica } from './fixtures/stores.js'
import type { Replica } from './fixtures/stores.js'
import type { CRDTDatastore } from '../../src/interfaces.js'

describe('interface-datastore compliance on IndexedDB', () => {
  const open = new Map<CRDTDatastore, Replica>()

  interfaceDatastoreTests<CRDTDatastore>({
    async setup () {
      const r = await idbReplica()
      open.set(r.store, r)
      return r.store
    },
    async teardown (store) {
      const r = open.get(store)
      open.delete(store)
      await r?.close()
    }
  })
})
