/**
 * The topic watch of Helia stores: one log line when pubsub peers are
 * connected but none shares our topic (a mistyped topic), with a fake
 * pubsub and a recording logger.
 */

import { expect } from 'aegir/chai'
import { TopicWatch } from '../src/helia/topic-watch.js'
import type { Logger } from '@libp2p/interface'

function recorder (): { log: Logger, errors: unknown[][] } {
  const errors: unknown[][] = []
  const log = Object.assign(() => {}, { error: (...args: unknown[]) => { errors.push(args) }, trace: () => {}, enabled: true, newScope: () => log }) as unknown as Logger
  return { log, errors }
}

describe('topic watch', () => {
  it('logs once when pubsub peers are connected but none subscribes to the topic, again only after it recovered', () => {
    const state = { peers: ['p1'], subscribers: [] as string[] }
    const { log, errors } = recorder()
    const watch = new TopicWatch({ getPeers: () => state.peers, getSubscribers: () => state.subscribers }, 'my-topic', log)
    watch.check()
    expect(errors).to.have.length(0) // one check is within the grace
    watch.check()
    watch.check()
    expect(errors).to.have.length(1)
    expect(errors[0][0]).to.include('none subscribes to topic "%s"')
    expect(errors[0].slice(1)).to.deep.equal([1, 'my-topic'])
    state.subscribers = ['p1']
    watch.check()
    state.subscribers = []
    watch.check()
    watch.check()
    expect(errors).to.have.length(2)
  })

  it('stays quiet without pubsub peers, and its timer runs only between start() and stop()', async () => {
    const { log, errors } = recorder()
    let checks = 0
    const watch = new TopicWatch({ getPeers: () => { checks++; return [] }, getSubscribers: () => [] }, 't', log, 5)
    watch.start()
    await new Promise(resolve => setTimeout(resolve, 40))
    watch.stop()
    const after = checks
    expect(after).to.be.greaterThan(0)
    await new Promise(resolve => setTimeout(resolve, 30))
    expect(checks).to.equal(after)
    expect(errors).to.have.length(0)
  })
})
