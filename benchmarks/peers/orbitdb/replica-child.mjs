/**
 * The syncing OrbitDB peer, run as a child process so its RSS is its own.
 * It opens the writer's keyvalue database by address (init.address).
 * Protocol: see ../../lib/child-runner.mjs. OrbitDB has no per-key event,
 * so after each 'update' the keys are recounted with db.all() (at most
 * every 200 ms) and onKey is called once per new key.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { runChild } from '../../lib/child-runner.mjs'
import { orbitPeer } from './replica.mjs'

runChild(async ({ dir, init }) => {
  const peer = await orbitPeer(dir)
  let db
  let onKey = () => {}
  let seen = 0
  let counting
  let again = false
  async function recount () {
    if (counting != null) { again = true; return }
    counting = (async () => {
      do {
        again = false
        const n = (await db.all()).length
        for (; seen < n; seen++) onKey()
        await new Promise(resolve => setTimeout(resolve, 200))
      } while (again)
    })().finally(() => { counting = undefined })
  }
  return {
    onKey (fn) { onKey = fn },
    async dial (addr) {
      await peer.libp2p.dial(multiaddr(addr))
      db = await peer.orbitdb.open(init.address)
      db.events.on('update', () => { void recount() })
      void recount()
    },
    subscribers () { return peer.libp2p.services.pubsub.getSubscribers(init.address).length },
    async countKeys () { return db == null ? 0 : (await db.all()).length },
    async close () {
      await counting
      await db?.close()
      await peer.close()
    }
  }
})
