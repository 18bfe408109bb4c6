/**
 * Hostile servers of the block-sync protocol: a replica asking a peer that
 * answers with junk, unrequested, oversized or hash-mismatched blocks,
 * silence, or a stream it never ends, cuts that peer off, keeps nothing bad,
 * and still catches up through bitswap.
 */

import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHeliaCRDT } from '../src/helia/index.js'
import { encodeBroadcast } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { goNode } from './fixtures/go-nodes.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { enc } from './fixtures/stores.js'
import { hostileServer } from './fixtures/sync-peers.js'
import type { HostileMode } from './fixtures/sync-peers.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { ReplicaNode } from '../src/node/index.js'

const TOPIC = 'sync-hostile-test'
const STORE_OPTIONS = { rebroadcastInterval: 300, repairInterval: 500, dagSyncerTimeout: 10_000, numWorkers: 4 }
const KEYS = 20
let seq = 0

async function blockOf (node: ReplicaNode, cid: CID): Promise<Uint8Array> {
  const chunks: Uint8Array[] = []
  for await (const chunk of node.blockstore.get(cid, { offline: true })) chunks.push(chunk)
  return chunks[0]
}

describe('sync protocol against hostile servers', function () {
  this.timeout(60_000)
  const cleanup: Array<() => Promise<void>> = []

  afterEach(async () => {
    for (const fn of cleanup.reverse()) await fn()
    cleanup.length = 0
  })

  const modes: Array<[HostileMode, string]> = [
    ['junk', 'frames that are not blocks'],
    ['unrequested', 'a block it was not asked for'],
    ['oversized', 'a frame over the size limit'],
    ['mismatched', 'a block whose bytes do not match its CID'],
    ['silent', 'nothing at all'],
    ['endless', 'one good block and then a stream it never ends']
  ]

  for (const [mode, what] of modes) {
    it(`cuts off a peer that sends ${what}, keeps nothing of it, and catches up by bitswap`, async () => {
      // the writer serves blocks by bitswap, and a hostile handler for our protocol
      const hNode = await createReplicaNode({ listen: [`/memory/hostile-${process.pid}-${seq++}`] })
      const hStore: HeliaCRDTDatastore = await createHeliaCRDT(hNode, { topic: TOPIC, ...STORE_OPTIONS, syncProtocol: false })
      cleanup.push(async () => { await hStore.stop(); await hNode.stop() })
      const stray = Uint8Array.from([1, 2, 3, seq])
      const strayCid = CID.createV1(raw.code, await sha256.digest(stray))
      await hNode.blockstore.put(strayCid, stray)
      const hostile = await hostileServer(hNode, mode, { get: async cid => blockOf(hNode, cid), other: strayCid })
      cleanup.push(async () => { await hostile.stop() })
      for (let i = 0; i < KEYS; i++) await hStore.put(new Key(`/h/${i}`), enc(`v${i}`))

      const bNode = await createReplicaNode({ listen: [`/memory/asker-${process.pid}-${seq++}`] })
      const bStore: HeliaCRDTDatastore = await createHeliaCRDT(bNode, { topic: TOPIC, ...STORE_OPTIONS, syncProtocol: { idleTimeout: 500 } })
      cleanup.unshift(async () => { await bStore.stop(); await bNode.stop() })
      await bNode.libp2p.dial(hNode.libp2p.getMultiaddrs()[0])

      let state: string[] = []
      await waitFor(async () => {
        state = await stateOf(bStore)
        return state.length === KEYS
      }, 30_000, `catch-up despite a ${mode} server`, 100)
      expect(state).to.deep.equal(await stateOf(hStore))

      const stats = bStore.sync?.blockstore.stats
      expect(hostile.requests).to.equal(1)
      expect(stats?.cut).to.equal(1)
      expect(stats?.fallbacks).to.be.at.least(1)
      expect(await bNode.blockstore.has(strayCid)).to.equal(false)
      // every block B holds is the writer's own
      for (const head of hStore.heads()) {
        expect(await blockOf(bNode, head.cid)).to.deep.equal(await blockOf(hNode, head.cid))
      }
    })
  }

  it('cuts off a peer that streams a hash-valid block that is no node, and leaves nothing of it on disk', async () => {
    const hNode = await createReplicaNode({ listen: [`/memory/hostile-${process.pid}-${seq++}`] })
    const hStore: HeliaCRDTDatastore = await createHeliaCRDT(hNode, { topic: TOPIC, ...STORE_OPTIONS, dagSyncerTimeout: 1000, syncProtocol: false })
    cleanup.push(async () => { await hStore.stop(); await hNode.stop() })
    // a node linking a block whose bytes hash to its dag-pb CID but do not decode
    const junk = Uint8Array.of(0xff, 0xff, 0xff, 0x0f, seq)
    const junkCid = CID.createV1(0x70, await sha256.digest(junk))
    // priority 1 needs no link to be read, so the node merges though its link never does (a higher claim would wait for the link)
    const top = await goNode({ elements: [{ key: '/u', value: '1' }], priority: 1, links: [junkCid] })
    await hNode.blockstore.put(top.cid, top.bytes)
    await hStore.receive(encodeBroadcast([{ cid: top.cid, dagName: '' }]))
    expect(hStore.heads().map(h => h.cid.toString())).to.deep.equal([top.cid.toString()])
    const hostile = await hostileServer(hNode, 'undecodable', { get: async cid => cid.equals(junkCid) ? junk : blockOf(hNode, cid), other: junkCid })
    cleanup.push(async () => { await hostile.stop() })

    const bNode = await createReplicaNode({ listen: [`/memory/asker-${process.pid}-${seq++}`] })
    const bStore: HeliaCRDTDatastore = await createHeliaCRDT(bNode, { topic: TOPIC, ...STORE_OPTIONS, dagSyncerTimeout: 1000, syncProtocol: { idleTimeout: 500 } })
    cleanup.unshift(async () => { await bStore.stop(); await bNode.stop() })
    await bNode.libp2p.dial(hNode.libp2p.getMultiaddrs()[0])

    await waitFor(async () => (await stateOf(bStore)).includes('/u=1') && (bStore.sync?.blockstore.stats.cut ?? 0) > 0, 30_000, 'the node merged and the peer cut off', 100)
    expect(hostile.requests).to.be.at.least(1)
    expect(await bNode.blockstore.has(top.cid)).to.equal(true)
    expect(await bNode.blockstore.has(junkCid)).to.equal(false)
  })
})
