import { expect } from 'aegir/chai'
import { createReplicaNode } from '../src/node/index.js'
import { waitFor } from './fixtures/network.js'
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
})
