/**
 * A logger per component (#14.6): the engine, walker, replicator, purge and
 * snapshot code log under their own `datastore-crdt:<component>` names
 * through the injected ComponentLogger, so `DEBUG=datastore-crdt:walker*`
 * shows one part alone.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { createCRDTDatastore, encodeBroadcast } from '../src/index.js'
import { HandFedBroadcaster, RemoteBlockstore } from './fixtures/progress.js'
import { RecordingLogger } from './fixtures/recording-logger.js'
import { enc, memoryReplica } from './fixtures/stores.js'

describe('loggers', function () {
  this.timeout(20_000)

  it('each part of the store logs under its own component name', async () => {
    const a = await memoryReplica({ repairInterval: 0 })
    for (let i = 0; i < 5; i++) await a.store.put(new Key(`/k${i}`), enc(`${i}`))
    await a.store.put(new Key('/named'), enc('x'), { dagName: 'app' })
    const logger = new RecordingLogger()
    const blockstore = new RemoteBlockstore(a.blockstore)
    const broadcaster = new HandFedBroadcaster()
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore, broadcaster, logger }, { repairInterval: 0 })
    try {
      expect([...logger.components].sort()).to.include.members([
        'datastore-crdt', 'datastore-crdt:engine', 'datastore-crdt:walker', 'datastore-crdt:replicator'
      ])
      // the head arrives, the nodes below it do not: the walker logs the failures
      const heads = a.store.heads()
      blockstore.offline = true
      for (const h of heads) blockstore.reachable.add(h.cid.toString())
      broadcaster.push(encodeBroadcast(heads.map(h => ({ cid: h.cid, dagName: h.dagName }))))
      await store.synced({ signal: AbortSignal.timeout(10_000) })
      expect(logger.whoLogged(/could not process node/)).to.deep.equal(['datastore-crdt:walker'])

      blockstore.offline = false
      await store.repair()
      expect(logger.whoLogged(/repairing from/)).to.deep.equal(['datastore-crdt:replicator'])

      expect(await store.purgeDAG('app')).to.equal(1)
      expect(logger.whoLogged(/^purged DAG/)).to.deep.equal(['datastore-crdt:purge'])
      expect(logger.whoLogged(/started with/)).to.deep.equal(['datastore-crdt'])
    } finally {
      await store.stop()
      await a.store.stop()
    }
  })
})
