import { expect } from 'aegir/chai'
import { TypedEventEmitter } from 'main-event'
import { CID } from 'multiformats/cid'
import { pubsubBroadcaster } from '../src/helia/index.js'
import { encodeBroadcast } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { waitFor } from './fixtures/network.js'
import type { PubSub, PubSubMessage, TopicValidator } from '../src/helia/index.js'

const CID_A = CID.parse('bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta')
const VALID = encodeBroadcast([{ cid: CID_A, dagName: '' }])

class FakePubSub extends TypedEventEmitter<{ message: CustomEvent<PubSubMessage> }> implements PubSub {
  subscribed = new Set<string>()
  published: Array<[string, Uint8Array]> = []
  topicValidators = new Map<string, TopicValidator>()
  failWith?: Error
  subscribe (topic: string): void { this.subscribed.add(topic) }
  unsubscribe (topic: string): void { this.subscribed.delete(topic) }
  async publish (topic: string, data: Uint8Array): Promise<unknown> {
    if (this.failWith != null) throw this.failWith
    this.published.push([topic, data])
    return {}
  }

  deliver (topic: string, data: Uint8Array): void {
    this.safeDispatchEvent('message', { detail: { topic, data } })
  }
}

describe('pubsubBroadcaster', () => {
  it('subscribes, publishes, and hands over messages of its topic only', async () => {
    const pubsub = new FakePubSub()
    const bc = pubsubBroadcaster({ pubsub }, { topic: 't' })
    expect([...pubsub.subscribed]).to.deep.equal(['t'])
    await bc.broadcast(VALID)
    expect(pubsub.published).to.deep.equal([['t', VALID]])
    pubsub.deliver('other', Uint8Array.of(1))
    pubsub.deliver('t', Uint8Array.of(2))
    expect(await bc.next()).to.deep.equal(Uint8Array.of(2))
    const pending = bc.next()
    pubsub.deliver('t', Uint8Array.of(3))
    expect(await pending).to.deep.equal(Uint8Array.of(3))
    await bc.stop()
  })

  it('installs a topic validator that rejects payloads that are not broadcasts', async () => {
    const pubsub = new FakePubSub()
    const bc = pubsubBroadcaster({ pubsub }, { topic: 't' })
    const validate = pubsub.topicValidators.get('t')
    expect(validate).to.be.a('function')
    expect(await validate?.(null, { topic: 't', data: VALID })).to.equal('accept')
    expect(await validate?.(null, { topic: 't', data: Uint8Array.of(0xff, 0x01) })).to.equal('reject')
    expect(await validate?.(null, { topic: 't', data: CID_A.bytes })).to.equal('accept')
    await bc.stop()
    expect(pubsub.topicValidators.has('t')).to.equal(false)
  })

  it('keeps a bounded receive buffer, dropping the oldest payloads', async () => {
    const pubsub = new FakePubSub()
    const bc = pubsubBroadcaster({ pubsub }, { topic: 't', maxQueued: 3 })
    for (let i = 0; i < 10; i++) pubsub.deliver('t', Uint8Array.of(i))
    expect(bc.dropped).to.equal(7)
    expect([await bc.next(), await bc.next(), await bc.next()]).to.deep.equal([Uint8Array.of(7), Uint8Array.of(8), Uint8Array.of(9)])
    await bc.stop()
  })

  it('publishing with no subscribed peers is not an error; other failures are', async () => {
    const pubsub = new FakePubSub()
    const bc = pubsubBroadcaster({ pubsub }, { topic: 't' })
    pubsub.failWith = Object.assign(new Error('PublishError.NoPeersSubscribedToTopic'), { name: 'PublishError' })
    await bc.broadcast(VALID)
    pubsub.failWith = new Error('stream reset')
    await expect(bc.broadcast(VALID)).to.eventually.be.rejectedWith('stream reset')
    await bc.stop()
  })

  it('stop() unsubscribes and rejects a pending next(); an aborted next() rejects', async () => {
    const pubsub = new FakePubSub()
    const bc = pubsubBroadcaster({ pubsub }, { topic: 't' })
    const controller = new AbortController()
    const aborted = bc.next({ signal: controller.signal })
    controller.abort()
    await expect(aborted).to.eventually.be.rejected.with.property('name', 'AbortError')
    const pending = bc.next()
    await bc.stop()
    await expect(pending).to.eventually.be.rejected.with.property('name', 'AbortError')
    expect(pubsub.subscribed.size).to.equal(0)
    expect(pubsub.listenerCount('message')).to.equal(0)
  })

  it('refuses a missing pubsub or topic with InvalidOptionsError', () => {
    expect(() => pubsubBroadcaster({ pubsub: {} as any }, { topic: 't' })).to.throw().with.property('name', 'InvalidOptionsError')
    expect(() => pubsubBroadcaster({ pubsub: new FakePubSub() }, { topic: '' })).to.throw().with.property('name', 'InvalidOptionsError')
  })

  it('over real gossipsub, junk is not forwarded while broadcasts are', async function () {
    this.timeout(60_000)
    const topic = 'validator-test'
    const nodes = await Promise.all([0, 1, 2].map(async () => createReplicaNode()))
    const bcs = nodes.map(n => pubsubBroadcaster({ pubsub: n.libp2p.services.pubsub }, { topic }))
    try {
      // a line: A - B - C, so everything C gets was forwarded by B
      await nodes[1].libp2p.dial(nodes[0].libp2p.getMultiaddrs()[0])
      await nodes[2].libp2p.dial(nodes[1].libp2p.getMultiaddrs()[0])
      await waitFor(() => nodes[2].libp2p.services.pubsub.getSubscribers(topic).length > 0 && nodes[0].libp2p.services.pubsub.getSubscribers(topic).length > 0, 10_000, 'subscriptions')
      const received: Uint8Array[] = []
      nodes[2].libp2p.services.pubsub.addEventListener('message', evt => { if (evt.detail.topic === topic) received.push(evt.detail.data) })
      // publish junk from A, then a valid broadcast until it arrives at C (the mesh takes a heartbeat to form)
      await nodes[0].libp2p.services.pubsub.publish(topic, Uint8Array.of(0xde, 0xad)).catch(() => {})
      await waitFor(async () => {
        await bcs[0].broadcast(VALID)
        return received.some(d => d.length === VALID.length)
      }, 20_000, 'the broadcast to reach C')
      expect(received.some(d => d.length === 2)).to.equal(false)
    } finally {
      await Promise.all(bcs.map(async b => b.stop()))
      await Promise.all(nodes.map(async n => n.stop()))
    }
  })
})
