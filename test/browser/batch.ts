/**
 * Batches and put/delete events in the browser on IndexedDB: the cases
 * shared with the Node specs (test/fixtures/cases/batch.ts).
 */

import { batchCases, eventCases } from '../fixtures/cases/batch.js'
import { idbReplica, syncReplica } from './fixtures/stores.js'
import type { Replica } from './fixtures/stores.js'
import type { CaseHarness } from '../fixtures/cases/harness.js'

const indexedDB: CaseHarness<Replica> = {
  replica: async init => idbReplica(undefined, init),
  sync: syncReplica,
  close: async r => { await r.close() }
}

describe('batches on IndexedDB', () => {
  batchCases(indexedDB)
})

describe('events on IndexedDB', () => {
  eventCases(indexedDB)
})
