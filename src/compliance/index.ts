/**
 * Entry of `datastore-crdt/compliance`: test suites that other
 * implementations of this package's interfaces run against themselves.
 * Test-only: it defines mocha tests, so import it from a test file only.
 */

export { broadcasterTests, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_REBROADCAST_EVERY } from './broadcaster.js'
export type { BroadcasterPair, BroadcasterTestSetup } from './broadcaster.js'
