/**
 * One sync protocol handler per libp2p node, shared by every store built
 * on it: libp2p allows one handler per protocol, and the handler serves any
 * block of the node's blockstore, whatever store wrote it. The first store
 * registers it, the last to stop unregisters it.
 */

import { syncServer } from './server.js'
import type { SyncServer, SyncServerComponents, SyncServerInit } from './server.js'
import type { AbortOptions } from 'interface-store'

interface Entry {
  server: SyncServer
  users: number
  starting: Promise<void>
}

const servers = new WeakMap<object, Entry>()

/** A store's hold on its node's sync server; `release()` unregisters it after the last hold */
export interface SyncServerLease {
  server: SyncServer
  release(options?: AbortOptions): Promise<void>
}

export async function acquireSyncServer (components: SyncServerComponents, init?: SyncServerInit, options?: AbortOptions): Promise<SyncServerLease> {
  const key = components.libp2p
  let entry = servers.get(key)
  if (entry == null) {
    const server = syncServer(components, init)
    entry = { server, users: 0, starting: server.start(options) }
    servers.set(key, entry)
  }
  const held = entry
  held.users++
  try {
    await held.starting
  } catch (err) {
    held.users--
    if (servers.get(key) === held) servers.delete(key)
    throw err
  }
  let released = false
  return {
    server: held.server,
    async release (opts?: AbortOptions): Promise<void> {
      if (released) return
      released = true
      if (--held.users > 0) return
      if (servers.get(key) === held) servers.delete(key)
      await held.server.stop(opts)
    }
  }
}
