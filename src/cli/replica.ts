/**
 * Starting and stopping the CLI's replica: a LevelDB-backed Helia node from
 * `createReplicaNode()` in the data directory, with a CRDT store on it. Also
 * what the CLI tells the user about the replica's reach: warnings when it
 * listens beyond loopback, when its key file is readable by others, and
 * when its peers share no topic with it; `--wait-sync`; and the wait of a
 * one-shot write for a peer that has it.
 */

import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaCRDT } from '../helia/index.js'
import { askMerged } from '../helia/merged-protocol.js'
import { createReplicaNode } from '../node/index.js'
import type { CommandResult } from './commands.js'
import type { CLIOptions } from './options.js'
import type { HeliaCRDTDatastore } from '../helia/index.js'
import type { ReplicaNode } from '../node/index.js'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

export interface Replica {
  node: ReplicaNode
  store: HeliaCRDTDatastore
  stop(): Promise<void>
}

export interface Notices {
  /** A line for the user (stderr) */
  info(text: string): void
  /** A warning for the user (stderr) */
  warn(text: string): void
}

/** How long after dialing to wait for gossipsub subscriptions before warning about the topic (ms) */
const TOPIC_GRACE = 3_000
/** Pause between polls of peers and stores (ms) */
const POLL = 100

const sleep = async (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

/** True for listen addresses only this machine can reach */
export function isLoopback (addr: string): boolean {
  return /^\/(ip4\/127\.|ip6\/::1\/|memory\/|unix\/)/.test(addr) || addr === '/ip6/::1'
}

async function checkKeyFile (data: string, notices: Pick<Notices, 'warn'>): Promise<void> {
  const file = join(data, 'peer.key')
  const mode = await stat(file).then(s => s.mode, () => undefined)
  if (mode != null && (mode & 0o077) !== 0) {
    notices.warn(`${file} (this replica's private key) is readable by other users (mode ${(mode & 0o777).toString(8)}): run chmod 600 ${file}`)
  }
}

/** Connected peers and how many of them subscribe to the replica's topic */
function topicPeers (replica: Replica): { connected: number, subscribed: number } {
  const pubsub = replica.node.libp2p.services.pubsub
  const connected = new Set(replica.node.libp2p.getConnections().map(c => c.remotePeer.toString())).size
  return { connected, subscribed: pubsub.getSubscribers(replica.store.broadcaster.topic).length }
}

/**
 * Warns when peers are connected but, after a grace period, none subscribes
 * to the topic (a mistyped --topic connects fine and replicates nothing)
 */
export async function checkTopic (replica: Replica, notices: Pick<Notices, 'warn'>): Promise<boolean> {
  const deadline = Date.now() + TOPIC_GRACE
  for (let i = 0; i < TOPIC_GRACE / POLL + 1; i++) {
    const { connected, subscribed } = topicPeers(replica)
    if (connected === 0 || subscribed > 0) return true
    if (Date.now() > deadline) break
    await sleep(POLL)
  }
  const { connected } = topicPeers(replica)
  notices.warn(`connected to ${connected} peer(s), but none subscribes to topic "${replica.store.broadcaster.topic}": nothing will replicate. Do the replicas use the same --topic?`)
  return false
}

export async function startReplica (options: CLIOptions, notices: Pick<Notices, 'warn'>): Promise<Replica> {
  for (const addr of options.listen) {
    if (!isLoopback(addr)) {
      notices.warn(`listening on ${addr} exposes this replica beyond this machine: any peer that reaches it can read and write the store`)
    }
  }
  await checkKeyFile(options.data, notices)
  const node = await createReplicaNode({ directory: options.data, listen: options.listen })
  let store: HeliaCRDTDatastore
  try {
    store = await createHeliaCRDT(node, {
      topic: options.topic,
      namespace: options.namespace,
      rebroadcastInterval: options.rebroadcast
    })
  } catch (err) {
    await node.stop()
    throw err
  }
  let stopping: Promise<void> | undefined
  const replica: Replica = {
    node,
    store,
    stop: async () => {
      stopping ??= (async () => {
        await store.stop()
        await node.stop()
      })()
      await stopping
    }
  }
  let dialed = 0
  for (const peer of options.peers) {
    try {
      await node.libp2p.dial(multiaddr(peer), { signal: AbortSignal.timeout(10_000) })
      dialed++
    } catch (err: any) {
      notices.warn(`could not dial ${peer}: ${err.message}`)
    }
  }
  if (dialed > 0) await checkTopic(replica, notices)
  return replica
}

/**
 * `--wait-sync`: waits (at most `options.timeout`) until a peer has
 * announced its heads, then until the store has merged everything
 * announced. Peers announce their heads every rebroadcast interval.
 */
export async function waitForSync (replica: Replica, options: CLIOptions, notices: Notices): Promise<void> {
  const start = Date.now()
  if (topicPeers(replica).subscribed === 0) {
    notices.warn('--wait-sync: no peer on the topic, nothing to wait for')
    return
  }
  const signal = AbortSignal.timeout(Math.max(options.timeout, 1))
  for (let i = 0; i < options.timeout / POLL + 1 && replica.store.stats().receivedBroadcasts === 0 && !signal.aborted; i++) {
    await sleep(POLL)
  }
  if (replica.store.stats().receivedBroadcasts === 0) {
    notices.warn(`--wait-sync: no peer announced heads within ${options.timeout} ms; the local state may be behind`)
    return
  }
  const before = replica.store.stats().fetchedBlocks
  try {
    await replica.store.synced({ signal })
  } catch {
    notices.warn(`--wait-sync: still merging after ${options.timeout} ms; the local state may be behind`)
    return
  }
  const stats = replica.store.stats()
  notices.info(`in sync: fetched ${stats.fetchedBlocks - before} blocks in ${((Date.now() - start) / 1000).toFixed(1)} s, height ${stats.maxHeight}`)
}

/**
 * After a one-shot write: waits (at most `options.timeout`) until a
 * connected peer has merged the new head, asking each over the merged
 * protocol, and says so in the result; otherwise says plainly that the
 * write is stored locally only.
 */
export async function confirmWrite (replica: Replica, options: CLIOptions, result: CommandResult, head: CID): Promise<void> {
  const peers = (): PeerId[] => [...new Map(replica.node.libp2p.getConnections().map(c => [c.remotePeer.toString(), c.remotePeer])).values()]
  const start = Date.now()
  let holder: string | undefined
  if (options.timeout > 0 && peers().length > 0) {
    const signal = AbortSignal.timeout(options.timeout)
    for (let round = 0; round < options.timeout / POLL + 1 && holder == null && !signal.aborted; round++) {
      for (const peer of peers()) {
        if (await askMerged(replica.node.libp2p, peer, head, { signal }).catch(() => false)) {
          holder = peer.toString()
          break
        }
      }
      if (holder == null) await sleep(POLL)
    }
  }
  const ms = Date.now() - start
  result.data = { ...result.data, replicatedTo: holder ?? null }
  result.text += holder != null
    ? `; peer ${holder} has it (${ms} ms)`
    : peers().length === 0
      ? '; stored locally only: no peer is connected'
      : `; stored locally only: no connected peer had it within ${options.timeout} ms (it is sent when a peer connects again)`
}
