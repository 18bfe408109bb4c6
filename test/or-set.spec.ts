/**
 * The OR-set merge rules on memory stores. The cases live in
 * test/fixtures/cases/or-set.ts, shared with the browser suite.
 */

import { orSetCases } from './fixtures/cases/or-set.js'
import { memoryReplica, syncReplica } from './fixtures/stores.js'

describe('OR-set merge rules', () => {
  orSetCases({
    replica: async init => memoryReplica(init),
    sync: syncReplica,
    close: async r => { await r.store.stop() }
  })
})
