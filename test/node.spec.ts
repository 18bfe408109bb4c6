import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { waitFor } from './fixtures/network.js'
import { enc, tempDir } from './fixtures/stores.js'
import type { ReplicaNode } from '../src/node/index.js'

/** Dials `target` from each of `dialers` at once; returns how many dials succeeded */
async function dialAll (target: ReplicaNode, dialers: ReplicaNode[]): Promise<number> {
  const addr = target.libp2p.getMultiaddrs()[0]
  const results = await Promise.allSettled(dialers.map(async d => d.libp2p.dial(addr, { signal: AbortSignal.timeout(10_000) })))
  const failures = results.flatMap(r => r.status === 'rejected' ? [String(r.reason)] : [])
  if (failures.length > 0) process.stderr.write(`dial failures: ${failures.join('; ')}\n`)
  return results.length - failures.length
}

describe('createReplicaNode', function () {
  this.timeout(60_000)
  const DIALERS = 9
  let nodes: ReplicaNode[] = []

  afterEach(async () => {
    await Promise.all(nodes.map(async n => n.stop()))
    nodes = []
  })

  it('listens on 127.0.0.1 only by default', async () => {
    const node = await createReplicaNode()
    nodes.push(node)
    const addrs = node.libp2p.getMultiaddrs().map(String)
    expect(addrs).to.not.be.empty()
    for (const addr of addrs) expect(addr).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
  })

  it('accepts a burst of connections from loopback peers (a local cluster reconnecting)', async () => {
    const target = await createReplicaNode()
    nodes.push(target)
    const dialers = await Promise.all(Array.from({ length: DIALERS }, async () => createReplicaNode()))
    nodes.push(...dialers)
    expect(await dialAll(target, dialers)).to.equal(DIALERS)
    // the target registers each connection once its side of the upgrade is done
    await waitFor(() => new Set(target.libp2p.getConnections().map(c => c.remotePeer.toString())).size === DIALERS, 10_000, 'the target to register every connection')
  })

  it('applies an inbound rate limit to loopback (here libp2p\'s own, 5 per second)', async () => {
    const target = await createReplicaNode({ inboundConnectionThreshold: 5 })
    nodes.push(target)
    const dialers = await Promise.all(Array.from({ length: DIALERS }, async () => createReplicaNode()))
    nodes.push(...dialers)
    // libp2p refuses more than 5 new connections per second from one host
    expect(await dialAll(target, dialers)).to.be.lessThan(DIALERS)
  })

  describe('lifecycle of a directory-backed node', () => {
    it('stop() is Helia\'s own (no replaced method) and closes both LevelDB stores', async () => {
      const dir = await tempDir('node-stop')
      try {
        const node = await createReplicaNode({ directory: dir.path })
        nodes.push(node)
        expect(Object.hasOwn(node, 'stop'), 'stop replaced on the instance').to.equal(false)
        const datastore = node.datastore as any
        const blockstore = (node.blockstore as any).unwrap().unwrap().child
        expect(datastore.db.status).to.equal('open')
        expect(blockstore.db.status).to.equal('open')
        nodes = []
        await node.stop()
        expect(datastore.db.status).to.equal('closed')
        expect(blockstore.db.status).to.equal('closed')
      } finally {
        await dir.remove()
      }
    })

    it('stop/create cycles on one directory keep the identity, blocks and values, with a store and a connected peer each time', async () => {
      const dir = await tempDir('node-cycles')
      const peer = await createReplicaNode({ listen: [`/memory/node-cycles-${process.pid}`] })
      nodes.push(peer)
      try {
        const bytes = enc('kept across restarts')
        const cid = CID.createV1(raw.code, await sha256.digest(bytes))
        let peerId: string | undefined
        for (let round = 0; round < 3; round++) {
          const node = await createReplicaNode({ directory: dir.path, listen: [`/memory/node-cycle-${process.pid}-${round}`] })
          if (peerId == null) peerId = node.libp2p.peerId.toString()
          expect(node.libp2p.peerId.toString()).to.equal(peerId)
          const store = await createHeliaCRDT(node, { topic: 'node-cycles' })
          // the peer connects (identify and bitswap write the peer store in the datastore) and stays while this node stops
          await node.libp2p.dial(peer.libp2p.getMultiaddrs()[0])
          if (round === 0) {
            await node.blockstore.put(cid, bytes)
            await store.put(new Key('/cycle'), enc('v0'))
          } else {
            expect(await node.blockstore.has(cid), `block in round ${round}`).to.equal(true)
            expect(new TextDecoder().decode(await store.get(new Key('/cycle')))).to.equal(`v${round - 1}`)
            await store.put(new Key('/cycle'), enc(`v${round}`))
          }
          await store.stop()
          await node.stop()
          expect((node.datastore as any).db.status, `datastore closed in round ${round}`).to.equal('closed')
        }
      } finally {
        await dir.remove()
      }
    })

    it('a memory node starts and stops again in place', async () => {
      const node = await createReplicaNode({ listen: [`/memory/node-inplace-${process.pid}`] })
      nodes.push(node)
      for (let round = 0; round < 2; round++) {
        await node.stop()
        expect(node.status).to.equal('stopped')
        await node.start()
        expect(node.status).to.equal('started')
        expect(node.libp2p.getMultiaddrs()).to.not.be.empty()
      }
    })
  })
})
