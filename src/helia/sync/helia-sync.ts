/**
 * The block-sync protocol wired onto a Helia node: the shared protocol
 * handler (serving this node's blockstore) and a syncing DAG blockstore in
 * front of the bitswap DAG syncer. `createHeliaCRDT()` uses it; a node whose
 * libp2p cannot register protocols gets the fallback alone.
 */

import { defaultLogger } from '@libp2p/logger'
import { announceStored, findBlockBrokers } from '../block-brokers.js'
import { acquireSyncServer } from './shared-server.js'
import { syncingBlockstore } from './syncing-blockstore.js'
import type { SyncServerInit, SyncServerLibp2p } from './server.js'
import type { SyncingBlockstore, SyncingBlockstoreInit, SyncingBlockstoreLibp2p } from './syncing-blockstore.js'
import type { DAGBlockstore } from '../../interfaces.js'
import type { ComponentLogger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** Options of the block-sync protocol, server and asker */
export interface SyncInit extends SyncServerInit, SyncingBlockstoreInit {}

export interface HeliaSyncComponents {
  libp2p: unknown
  blockstore: {
    has(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
    put(cid: CID, bytes: Uint8Array, options?: AbortOptions): unknown
    get(cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  }
  fallback: DAGBlockstore
  logger?: ComponentLogger
}

/** The sync protocol's parts for one store */
export interface HeliaSync {
  blockstore: SyncingBlockstore
  /** Registers (or shares) the node's protocol handler */
  start(options?: AbortOptions): Promise<void>
  /** Ends this store's streams and releases the handler */
  stop(options?: AbortOptions): Promise<void>
}

function canSync (libp2p: unknown): libp2p is SyncServerLibp2p & SyncingBlockstoreLibp2p {
  const l = libp2p as Partial<SyncServerLibp2p & SyncingBlockstoreLibp2p> | undefined
  return typeof l?.handle === 'function' && typeof l.unhandle === 'function' &&
    typeof l.dialProtocol === 'function' && typeof l.getConnections === 'function' &&
    typeof l.peerStore?.get === 'function'
}

/** The sync protocol over `components.libp2p`, or undefined when that libp2p cannot carry it */
export function heliaSync (components: HeliaSyncComponents, init: SyncInit = {}): HeliaSync | undefined {
  const { libp2p } = components
  if (!canSync(libp2p)) return undefined
  const logger = components.logger ?? defaultLogger()
  // Helia's block brokers, found under its blockstore: told of streamed blocks once stored
  const brokers = findBlockBrokers({ blockstore: components.blockstore })
  const blockstore = syncingBlockstore({
    local: components.blockstore as SyncingBlockstore,
    fallback: components.fallback,
    announce: async (cids, options) => { await announceStored(brokers, cids, options) },
    libp2p,
    logger
  }, init)
  let lease: Awaited<ReturnType<typeof acquireSyncServer>> | undefined
  return {
    blockstore,
    async start (options) {
      blockstore.start()
      lease ??= await acquireSyncServer({ libp2p, blockstore: components.blockstore, logger }, init, options)
    },
    async stop (options) {
      await blockstore.stop()
      await lease?.release(options)
      lease = undefined
    }
  }
}
