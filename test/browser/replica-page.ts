/**
 * A browser replica for the Node↔browser replication test: a Helia node in
 * the page (WebSockets transport, noise, yamux, identify, gossipsub,
 * bitswap; no discovery, no routers) with its blocks and state in
 * IndexedDB, and the CRDT store on top through the Helia adapter. The Node
 * test drives it through `window.replica` with `page.evaluate`.
 *
 * Invariants: it dials only the address it is given (the test passes a
 * 127.0.0.1 WebSockets address); the connection gater allows that loopback
 * address, which libp2p's browser defaults refuse as private; every wait
 * is bounded by its timeout; `stop()` stops the store, Helia and both
 * IndexedDB databases. `writeMany` reports each write to Node (through the
 * page function `__ack`, when the test exposed one) only once `put`
 * resolved, so the test knows which writes were acknowledged when it kills
 * the tab.
 */

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { IDBBlockstore } from 'blockstore-idb'
import { IDBDatastore } from 'datastore-idb'
import { createHeliaLight } from 'helia'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../../src/helia/helia.js'
import type { HeliaCRDTDatastore, HeliaLike } from '../../src/helia/helia.js'

export interface PageReplica {
  /** Opens `<name>-data` / `<name>-blocks`, starts Helia and the store (not connected to anyone) */
  start(name: string, topic: string): Promise<string>
  /**
   * Puts `<prefix>/<i>` = `v<i>` for i = 0…count-1 one after the other,
   * calling `__ack(key)` in the page after each put resolved
   */
  writeMany(prefix: string, count: number): Promise<void>
  /** Every key under `prefix` */
  keys(prefix: string): Promise<string[]>
  /** Whether the store is marked dirty (an unclean stop was detected, or a walk is unfinished) */
  isDirty(): Promise<boolean>
  /** Runs one repair pass */
  repair(): Promise<void>
  /** Dials a peer */
  dial(addr: string): Promise<void>
  put(key: string, value: string): Promise<void>
  /** The value, or null when the key is absent */
  get(key: string): Promise<string | null>
  /** Resolves true once `key` holds `value`, false after `timeout` ms */
  waitFor(key: string, value: string, timeout: number): Promise<boolean>
  stop(): Promise<void>
}

let running: { store: HeliaCRDTDatastore, dial(addr: string): Promise<void>, stop(): Promise<void> } | undefined

async function start (name: string, topic: string): Promise<string> {
  const datastore = new IDBDatastore(`${name}-data`)
  const blockstore = new IDBBlockstore(`${name}-blocks`)
  await datastore.open()
  await blockstore.open()
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ datastore, blockstore }), {
    addresses: { listen: [] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    connectionGater: { denyDialMultiaddr: () => false },
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true })
    }
  }), { sendBlocksDebounce: 0, sendWantlistDebounce: 0 })
  await helia.start()
  const store = await createHeliaCRDT(helia as unknown as HeliaLike, { topic, rebroadcastInterval: 250, repairInterval: 0 })
  running = {
    store,
    dial: async (addr: string) => { await helia.libp2p.dial(multiaddr(addr)) },
    stop: async () => {
      await store.stop()
      await helia.stop()
      await datastore.close()
      await blockstore.close()
    }
  }
  return helia.libp2p.peerId.toString()
}

function live (): HeliaCRDTDatastore {
  if (running === undefined) throw new Error('the page replica is not started')
  return running.store
}

async function get (key: string): Promise<string | null> {
  const store = live()
  const k = new Key(key)
  return await store.has(k) ? new TextDecoder().decode(await store.get(k)) : null
}

const replica: PageReplica = {
  start,
  dial: async (addr) => {
    if (running === undefined) throw new Error('the page replica is not started')
    await running.dial(addr)
  },
  put: async (key, value) => { await live().put(new Key(key), new TextEncoder().encode(value)) },
  get,
  waitFor: async (key, value, timeout) => {
    const deadline = Date.now() + timeout
    while (Date.now() < deadline) {
      if (await get(key) === value) return true
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    return false
  },
  writeMany: async (prefix, count) => {
    const ack = (globalThis as any).__ack as ((key: string) => Promise<void>) | undefined
    for (let i = 0; i < count; i++) {
      const key = `${prefix}/${i}`
      await live().put(new Key(key), new TextEncoder().encode(`v${i}`))
      await ack?.(key)
    }
  },
  keys: async (prefix) => {
    const out: string[] = []
    for await (const key of live().queryKeys({ prefix })) out.push(key.toString())
    return out
  },
  isDirty: async () => live().isDirty(),
  repair: async () => { await live().repair() },
  stop: async () => {
    await running?.stop()
    running = undefined
  }
}

;(globalThis as any).replica = replica
