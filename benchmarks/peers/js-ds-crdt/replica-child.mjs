/**
 * The syncing js-ds-crdt replica, run as a child process so its RSS is its
 * own. Protocol: see ../../lib/child-runner.mjs.
 */

import { install } from './resolve-hook.mjs'
import { runChild } from '../../lib/child-runner.mjs'

install()
const { jsReplica } = await import('./replica.mjs')
const { multiaddr } = await import('@multiformats/multiaddr')

runChild(async ({ dir, topic }) => {
  let onKey = () => {}
  const r = await jsReplica(dir, topic, { putHook: () => { onKey() } })
  return {
    onKey (fn) { onKey = fn },
    async dial (addr) { await r.libp2p.dial(multiaddr(addr)) },
    subscribers (t) { return r.libp2p.services.pubsub.getSubscribers(t).length },
    async countKeys () { return (await r.store.query({})).length },
    async close () { await r.close() }
  }
})
