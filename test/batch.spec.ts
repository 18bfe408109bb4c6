/**
 * Batches and put/delete events on memory stores. The cases live in
 * test/fixtures/cases/batch.ts, shared with the browser suite.
 */

import { batchCases, eventCases } from './fixtures/cases/batch.js'
import { memoryReplica, syncReplica } from './fixtures/stores.js'
import type { CaseHarness } from './fixtures/cases/harness.js'
import type { MemoryReplica } from './fixtures/stores.js'

const memory: CaseHarness<MemoryReplica> = {
  replica: async init => memoryReplica(init),
  sync: syncReplica,
  close: async r => { await r.store.stop() }
}

describe('batches', () => {
  batchCases(memory)
})

describe('events', () => {
  eventCases(memory)
})
