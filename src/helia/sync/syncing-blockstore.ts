/**
 * The DAG blockstore of the Helia adapter with the block-sync protocol in
 * front of bitswap. A block already stored locally is served from disk. On
 * a miss it asks a connected peer that speaks `/datastore-crdt/sync/1.0.0`
 * for the DAG below the missing CID; that stream stores, after checking
 * them, the block and the ones below it, so the walker's next fetches find
 * them locally (or wait for the stream that is bringing them). Whatever no
 * stream delivers, and every block when no peer speaks the protocol (a
 * go-ds-crdt replica, or ours with it off), is fetched by the fallback
 * (`heliaDAGSyncer`, bitswap).
 *
 * Invariants:
 * - Only verified blocks reachable from a request are stored (see client.ts).
 * - Nothing here touches the CRDT state: blocks land in the blockstore and
 *   the engine merges them as it walks. A stream cut by a crash leaves the
 *   engine's `w/` frontier as it was; the next fetch below it starts a new
 *   request from there.
 * - A fetch that names a peer (`preferPeer`: the announcer of the head
 *   being walked) asks that peer first, then the others that speak the
 *   protocol (the one that served last first), then peers whose protocols
 *   are not known yet (identify has not run on a new connection: asking
 *   costs one negotiation, and a refusal counts as a no), then the
 *   fallback.
 * - A peer that breaks the protocol or fails to open a stream is not asked
 *   again for `badPeerTimeout` ms; at most `maxStreamsPerPeer` streams are
 *   open with one peer.
 * - Memory is bounded whatever the DAG's size: the blocks expected from
 *   running streams (their frontier), up to `MAX_HANDOFF_BLOCKS` decoded
 *   blocks waiting for the walker (`getLocal()` hands them over without a
 *   disk read; when full, later blocks are read back from disk) and the last `MAX_DELIVERED` CIDs delivered (so `discard()`
 *   can delete a delivered block the store refused).
 * - `stop()` aborts every stream and waits for them.
 */

import { cidKey } from '../../codec/cid-key.js'
import { onAbort } from '../../on-abort.js'
import { BlockHandoff, delay } from '../../utils.js'
import { deleteBlock } from '../delete-block.js'
import { streamBlocks } from './client.js'
import { localReader } from './local-reader.js'
import { localWriter } from './local-writer.js'
import { DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BLOCK_SIZE, DEFAULT_MAX_BLOCKS, DEFAULT_MAX_BYTES, DEFAULT_MAX_STREAMS_PER_PEER, MAX_HAVE, SYNC_PROTOCOL } from './protocol.js'
import type { AcceptedBlock } from './client.js'
import type { LocalReader } from './local-reader.js'
import type { LocalWriter } from './local-writer.js'
import type { DAGBlockstore, LocalBlock } from '../../interfaces.js'
import type { ComponentLogger, Logger, PeerId, Stream } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** The parts of libp2p the syncing blockstore uses */
export interface SyncingBlockstoreLibp2p {
  getConnections(): Array<{ remotePeer: PeerId }>
  dialProtocol(peer: PeerId, protocol: string, options?: AbortOptions): Promise<Stream>
  peerStore: { get(peer: PeerId, options?: AbortOptions): Promise<{ protocols: string[], metadata?: Map<string, unknown> }> }
}

export interface SyncingBlockstoreComponents {
  /** The local blockstore; `offline` keeps Helia's from going to the network */
  local: Pick<DAGBlockstore, 'has' | 'put'> & {
    /** Removes a delivered block the store refused */
    delete?(cid: CID, options?: AbortOptions): unknown
    /** Helia's wrapping blockstores hand out the store they wrap */
    unwrap?(): SyncingBlockstoreComponents['local']
    get(cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  }
  /** Fetches what the protocol does not deliver (bitswap) */
  fallback: DAGBlockstore
  /**
   * Tells the network that streamed blocks are now stored (Helia's block
   * brokers, see `announceStored()`): Helia's `put` tells bitswap
   * before it stores, too early for peers that already want them
   */
  announce?(cids: CID[], options?: AbortOptions): Promise<void>
  libp2p: SyncingBlockstoreLibp2p
  logger: ComponentLogger
}

export interface SyncingBlockstoreInit {
  /**
   * Blocks asked for in one request
   *
   * @default 8192
   */
  maxBlocks?: number
  /**
   * Bytes of blocks asked for in one request
   *
   * @default 67_108_864
   */
  maxBytes?: number
  /**
   * Largest block accepted; a peer sending a larger one is cut off
   *
   * @default 2_097_152
   */
  maxBlockSize?: number
  /**
   * Longest wait (ms) for the next block of a stream before the peer is cut off
   *
   * @default 10_000
   */
  idleTimeout?: number
  /**
   * Sync streams open with one peer at once
   *
   * @default 2
   */
  maxStreamsPerPeer?: number
  /**
   * How long (ms) a peer that broke the protocol or could not open a stream is not asked
   *
   * @default 60_000
   */
  badPeerTimeout?: number
}

export const DEFAULT_BAD_PEER_TIMEOUT = 60_000

/** Wait (ms) before asking again a peer that refused a stream, times the refusals so far */
const REFUSED_BACKOFF = 50

/** Refused streams in a row after which a session gives up on the peer for a while */
const MAX_REFUSALS = 4

/** How long (ms) what a peer's protocol list (or a refused stream) said is trusted before it is read again */
const PROTOCOLS_TTL = 5_000
/** Times a miss looks for a stream before it is left to the fallback */
const MAX_ROUNDS = 4
/** Decoded blocks kept for the walker to take (`getLocal()`), at most, by count and bytes */
const MAX_HANDOFF_BLOCKS = 128
const MAX_HANDOFF_BYTES = 2 * 1024 * 1024
/** A handed-off block nobody took for this long (ms) may make room for a newer one */
const HANDOFF_STALE = 10_000
/** CIDs of delivered blocks remembered for `discard()` */
const MAX_DELIVERED = 4096

/** Figures of the syncing blockstore since start */
export interface SyncStats {
  /** Requests made (streams opened) */
  requests: number
  /** Blocks accepted from streams */
  blocks: number
  /** Bytes of blocks accepted from streams */
  bytes: number
  /** Streams cut for breaking the protocol */
  cut: number
  /** Blocks fetched through the fallback */
  fallbacks: number
  /** Requests made to the peer a fetch named first (the announcer of the head) */
  preferred: number
  /** Blocks handed to the walker decoded, without a read from disk */
  handedOver: number
}

/** A DAG blockstore that syncs through the block-sync protocol first */
export interface SyncingBlockstore extends DAGBlockstore {
  /**
   * Supplies the CIDs the asker holds (its heads), sent as `have`, and
   * whether it holds everything below them (no walk under way or waiting,
   * no unfinished branch: `holdsAllBelowHeads()`), sent as `complete`: a
   * server then leaves out what it reaches below them too
   */
  setHave(have: () => CID[], complete?: (options?: AbortOptions) => Promise<boolean>): void
  readonly stats: SyncStats
  /** Fetches through streams again after `stop()` (a restarted store) */
  start(): void
  /** Aborts every stream and waits for them */
  stop(): Promise<void>
}

interface Waiter {
  promise: Promise<boolean>
  resolve(found: boolean): void
}

class BlockSyncingBlockstore implements SyncingBlockstore {
  private readonly components: SyncingBlockstoreComponents
  private readonly log: Logger
  private readonly maxBlocks: number
  private readonly maxBytes: number
  private readonly maxBlockSize: number
  private readonly idleTimeout: number
  private readonly maxStreams: number
  private readonly badPeerTimeout: number
  private have: () => CID[] = () => []
  private complete?: (options?: AbortOptions) => Promise<boolean>
  private controller = new AbortController()
  // CIDs are keyed by cidKey (their bytes), never their base32 text: see cid-key.ts
  /** CID → how many running streams expect it */
  private readonly expected = new Map<string, number>()
  /** CID → fetches waiting for a stream to deliver it */
  private readonly waiters = new Map<string, Waiter>()
  /** Peer → open streams */
  private readonly open = new Map<string, number>()
  /** Peer → time until which it is not asked */
  private readonly bad = new Map<string, number>()
  /** Peer → whether it speaks the protocol, and when that was read (unknown peers are not kept) */
  private readonly speaks = new Map<string, { yes: boolean, at: number }>()
  private readonly sessions = new Set<Promise<void>>()
  private ended?: Waiter
  private lastGood?: string
  /** CID → a decoded block a stream delivered, until the walker takes it (oldest first) */
  private readonly handoff = new BlockHandoff<LocalBlock & { at: number }>(MAX_HANDOFF_BLOCKS, MAX_HANDOFF_BYTES)
  /** CIDs delivered by streams lately (oldest first) */
  private readonly delivered = new Set<string>()
  /** Reads local blocks in-process when the blockstore allows (see local-reader.ts) */
  private readonly reader: LocalReader
  /** Stores a delivery in one LevelDB batch when the blockstore allows (see local-writer.ts) */
  private readonly writer: LocalWriter
  public readonly stats: SyncStats = { requests: 0, blocks: 0, bytes: 0, cut: 0, fallbacks: 0, preferred: 0, handedOver: 0 }

  constructor (components: SyncingBlockstoreComponents, init: SyncingBlockstoreInit) {
    this.components = components
    this.log = components.logger.forComponent('datastore-crdt:sync:client')
    this.reader = localReader(components.local, (err) => {
      this.log('in-process block reads disagree with the blockstore, reading through it from now on - %e', err)
    })
    this.writer = localWriter(components.local, (err) => {
      this.log('direct block writes are not found through the blockstore, storing through it from now on - %e', err)
    })
    this.maxBlocks = init.maxBlocks ?? DEFAULT_MAX_BLOCKS
    this.maxBytes = init.maxBytes ?? DEFAULT_MAX_BYTES
    this.maxBlockSize = init.maxBlockSize ?? DEFAULT_MAX_BLOCK_SIZE
    this.idleTimeout = init.idleTimeout ?? DEFAULT_IDLE_TIMEOUT
    this.maxStreams = init.maxStreamsPerPeer ?? DEFAULT_MAX_STREAMS_PER_PEER
    this.badPeerTimeout = init.badPeerTimeout ?? DEFAULT_BAD_PEER_TIMEOUT
  }

  setHave (have: () => CID[], complete?: (options?: AbortOptions) => Promise<boolean>): void {
    this.have = have
    this.complete = complete
  }

  async * get (cid: CID, options?: AbortOptions & { preferPeer?: string }): AsyncGenerator<Uint8Array> {
    const { local, fallback } = this.components
    const handed = this.take(cid)
    if (handed != null) {
      yield handed.bytes
      return
    }
    const stored = await this.reader.read(cid, options)
    if (stored != null) {
      yield stored
      return
    }
    if (await this.viaSync(cid, options)) {
      // a stream may just have brought it
      const delivered = this.take(cid)
      if (delivered != null) {
        yield delivered.bytes
        return
      }
      yield * local.get(cid, { ...options, offline: true })
      return
    }
    this.stats.fallbacks++
    yield * fallback.get(cid, options)
  }

  /**
   * Stores one block (a local write, or a block carried in a broadcast) as a
   * stream's delivery is stored: straight to LevelDB when the blockstore
   * allows, then announced, instead of Helia's lock, `has`, `put` and early
   * announcement
   */
  async put (cid: CID, bytes: Uint8Array, options?: AbortOptions): Promise<void> {
    await this.store([{ cid, bytes }], options)
    await this.announce([cid], options)
  }

  /**
   * Stores several blocks (the head blocks of broadcasts that arrived
   * together) as `put` stores one: in one LevelDB batch when the blockstore
   * allows, then announced together; otherwise one `put` each, all at once.
   * Yields the CIDs once every block is stored.
   */
  async * putMany (source: Iterable<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): AsyncGenerator<CID> {
    const blocks = [...source]
    await this.store(blocks, options)
    await this.announce(blocks.map(b => b.cid), options)
    for (const { cid } of blocks) yield cid
  }

  /**
   * The block at hand without the network: decoded, when a stream just
   * delivered it (taken out of the hand-off, no disk read), else read from
   * the local blockstore; undefined when it is not local
   */
  async getLocal (cid: CID, options?: AbortOptions): Promise<LocalBlock | undefined> {
    const handed = this.take(cid)
    if (handed != null) return handed
    const bytes = await this.reader.read(cid, options)
    return bytes == null ? undefined : { bytes }
  }

  /**
   * The store refused a block it fetched (too large, or not a node): the
   * fallback DAG syncer removes it if it stored it, and a block a stream
   * delivered lately is deleted here (streams refuse blocks that do not
   * decode, but the store may have a smaller size limit)
   */
  async discard (cid: CID, options?: AbortOptions): Promise<void> {
    const key = cidKey(cid)
    this.handoff.take(key)
    if (this.delivered.delete(key)) {
      try {
        await deleteBlock(this.components.local, cid, options)
      } catch (err: any) {
        this.log.error('could not delete refused block %c - %e', cid, err)
      }
    }
    await this.components.fallback.discard?.(cid, options)
  }

  async has (cid: CID, options?: AbortOptions): Promise<boolean> {
    return this.reader.has(cid, options)
  }

  /** Deletes a block from the node's blockstore (compaction); a pinned block stays */
  async delete (cid: CID, options?: AbortOptions): Promise<void> {
    this.handoff.take(cidKey(cid))
    await deleteBlock(this.components.local, cid, options)
  }

  /** Fetches through streams again after `stop()` (a restarted store) */
  start (): void {
    if (this.controller.signal.aborted) this.controller = new AbortController()
  }

  async stop (): Promise<void> {
    this.controller.abort()
    while (this.sessions.size > 0) await Promise.allSettled([...this.sessions])
    this.handoff.clear()
  }

  /** Takes a delivered block out of the hand-off */
  private take (cid: CID): LocalBlock | undefined {
    if (this.handoff.size === 0) return undefined
    const key = cidKey(cid)
    const found = this.handoff.take(key)
    if (found == null) return undefined
    this.stats.handedOver++
    return { bytes: found.bytes, node: found.node }
  }

  /** Keeps stored blocks for the walker and remembers them as delivered, within bounds */
  private delivery (blocks: AcceptedBlock[]): void {
    for (const { key, bytes, node } of blocks) {
      this.delivered.delete(key)
      this.delivered.add(key)
      if (this.delivered.size > MAX_DELIVERED) this.delivered.delete(this.delivered.values().next().value as string)
      this.handoff.take(key)
      // full: make room only by dropping blocks nobody took for a while; the
      // oldest are those a lagging walker needs next, so newer ones are the
      // ones left to the disk
      const now = Date.now()
      while (!this.handoff.fits(bytes.byteLength)) {
        const oldest = this.handoff.oldest()
        if (oldest == null || now - oldest[1].at < HANDOFF_STALE) break
        this.handoff.take(oldest[0])
      }
      if (!this.handoff.fits(bytes.byteLength)) continue
      this.handoff.set(key, { bytes, node, at: now })
    }
  }

  /** Gets `cid` into the local blockstore through a stream; false when none delivered it */
  private async viaSync (cid: CID, options?: AbortOptions & { preferPeer?: string }): Promise<boolean> {
    const key = cidKey(cid)
    const tried = new Set<string>()
    for (let round = 0; round < MAX_ROUNDS && !this.controller.signal.aborted; round++) {
      options?.signal?.throwIfAborted()
      if (this.expected.has(key)) {
        if (await this.wait(this.waiterFor(key), options)) return true
        continue
      }
      // a stream may have brought it since the caller looked
      if (await this.components.local.has(cid, options)) return true
      const peer = await this.pickPeer(tried, options?.preferPeer, options)
      if (peer == null) return false
      if (peer === 'busy') {
        await this.wait(this.ended ??= deferred(), options)
        continue
      }
      tried.add(peer.toString())
      if (peer.toString() === options?.preferPeer) this.stats.preferred++
      this.startSession(peer, cid)
    }
    return this.components.local.has(cid, options)
  }

  /**
   * A peer to ask: the preferred one (the announcer) first, then the last
   * that served well; 'busy' when all that could are at their stream limit
   */
  private async pickPeer (tried: Set<string>, prefer?: string, options?: AbortOptions): Promise<PeerId | 'busy' | undefined> {
    const now = Date.now()
    const seen = new Set<string>()
    const unknown = new Set<string>()
    const peers: PeerId[] = []
    for (const c of this.components.libp2p.getConnections()) {
      const id = c.remotePeer.toString()
      if (seen.has(id) || tried.has(id) || (this.bad.get(id) ?? 0) > now) continue
      seen.add(id)
      const speaks = await this.speaksSync(c.remotePeer, options)
      if (speaks === 'no') continue
      peers.push(c.remotePeer)
      if (speaks === 'maybe') unknown.add(id)
    }
    // a peer whose protocols are not known yet is tried after those known to speak it
    const rank = (p: PeerId): number => {
      const id = p.toString()
      if (unknown.has(id)) return -1
      if (id === prefer) return 2
      return id === this.lastGood ? 1 : 0
    }
    peers.sort((a, b) => rank(b) - rank(a))
    const free = peers.find(p => (this.open.get(p.toString()) ?? 0) < this.maxStreams)
    if (free != null) return free
    return peers.length > 0 ? 'busy' : undefined
  }

  /**
   * Whether a peer speaks the protocol, as its identify record says; 'maybe'
   * until identify has run on it (a new connection): such a peer is asked
   * all the same, and a stream it refuses counts as a no
   */
  private async speaksSync (peer: PeerId, options?: AbortOptions): Promise<'yes' | 'no' | 'maybe'> {
    const id = peer.toString()
    const known = this.speaks.get(id)
    if (known != null && Date.now() - known.at < PROTOCOLS_TTL) return known.yes ? 'yes' : 'no'
    // an unknown peer (no record) is a 'maybe'
    const record = await this.components.libp2p.peerStore.get(peer, options).catch(() => undefined)
    const yes = record?.protocols.includes(SYNC_PROTOCOL) === true
    // before identify the list holds only what this node negotiated itself
    // (identify's own protocol); identify leaves the agent's name behind
    if (!yes && !identified(record)) return 'maybe'
    this.speaks.set(id, { yes, at: Date.now() })
    return yes ? 'yes' : 'no'
  }

  /** Opens a stream to `peer` asking for `want`; registers the want as expected at once */
  private startSession (peer: PeerId, want: CID): void {
    const id = peer.toString()
    const mine = new Set<string>()
    const expect = (cid: CID, key: string): void => {
      if (mine.has(key)) return
      mine.add(key)
      this.expected.set(key, (this.expected.get(key) ?? 0) + 1)
    }
    const settle = (key: string, found: boolean): void => {
      if (!mine.delete(key)) return
      const left = (this.expected.get(key) ?? 1) - 1
      if (left > 0 && !found) {
        this.expected.set(key, left)
        return
      }
      this.expected.delete(key)
      const waiter = this.waiters.get(key)
      this.waiters.delete(key)
      waiter?.resolve(found)
    }
    expect(want, cidKey(want))
    this.open.set(id, (this.open.get(id) ?? 0) + 1)

    const session = (async () => {
      const signal = this.controller.signal
      try {
        for (let attempt = 1; ; attempt++) {
          try {
            await this.request(peer, want, expect, settle, signal)
            return
          } catch (err: any) {
            // the peer's limit counts a stream that just ended here: its wants stay expected, asked again shortly
            if (err.name !== 'SyncRefusedError' || attempt >= MAX_REFUSALS || signal.aborted) throw err
            this.log('%s refused a sync stream, asking it again in %d ms - %e', id, REFUSED_BACKOFF * attempt, err)
            await delay(REFUSED_BACKOFF * attempt, { signal })
          }
        }
      } catch (err: any) {
        if (signal.aborted) return
        if (err.name === 'UnsupportedProtocolError') {
          // asked before its protocols were known: it does not speak ours (a go-ds-crdt replica)
          this.log.trace('%s does not speak %s', id, SYNC_PROTOCOL)
          this.speaks.set(id, { yes: false, at: Date.now() })
          return
        }
        if (err.name === 'SyncProtocolError') this.stats.cut++
        // refused again and again: not a fault, but not asked for a while either
        const pause = err.name === 'SyncRefusedError' ? REFUSED_BACKOFF * MAX_REFUSALS : this.badPeerTimeout
        this.log.error('sync stream with %s failed, not asking it for %d ms - %e', id, pause, err)
        this.bad.set(id, Date.now() + pause)
        if (this.lastGood === id) this.lastGood = undefined
      } finally {
        for (const key of [...mine]) settle(key, false)
        this.open.set(id, (this.open.get(id) ?? 1) - 1)
        const ended = this.ended
        this.ended = undefined
        ended?.resolve(true)
      }
    })()
    this.sessions.add(session)
    void session.finally(() => this.sessions.delete(session))
  }

  /**
   * One request on a new stream to `peer`; rejects with the stream's error
   * (the stream aborted), `UnsupportedProtocolError` included
   */
  private async request (peer: PeerId, want: CID, expect: (cid: CID, key: string) => void, settle: (key: string, found: boolean) => void, signal: AbortSignal): Promise<void> {
    const id = peer.toString()
    let stream: Stream | undefined
    try {
      stream = await this.components.libp2p.dialProtocol(peer, SYNC_PROTOCOL, { signal })
      this.stats.requests++
      // the heads first: a head added after the store was found clean would belong to an unfinished walk
      const have = this.have().slice(0, MAX_HAVE)
      const complete = have.length > 0 && this.complete != null && await this.complete({ signal }).catch(() => false)
      const result = await streamBlocks(stream, { want: [want], have, maxBlocks: this.maxBlocks, maxBytes: this.maxBytes, complete }, {
        maxBlockSize: this.maxBlockSize,
        idleTimeout: this.idleTimeout,
        expect,
        accept: async (blocks) => {
          await this.store(blocks, { signal })
          // handed off as soon as stored: a walker that read them from disk
          // first would leave them in the hand-off, untaken, until stale
          this.delivery(blocks)
          for (const { key, bytes } of blocks) {
            this.stats.blocks++
            this.stats.bytes += bytes.byteLength
            settle(key, true)
          }
          await this.announce(blocks.map(b => b.cid), { signal })
        }
      }, { signal })
      if (result.blocks > 0) this.lastGood = id
      this.log.trace('stream from %s ended: %d blocks, %d bytes, %d undelivered', id, result.blocks, result.bytes, result.undelivered.length)
      stream.abort(new Error('request finished'))
    } catch (err: any) {
      stream?.abort(err)
      throw err
    }
  }

  /**
   * Stores blocks, all of a delivery at once (`announce()` then tells the
   * network). Over
   * blockstore-level that is one LevelDB batch (local-writer.ts); otherwise
   * concurrent `put`s, which keep the thread pool busy and let LevelDB join
   * them into one log write (Helia's `putMany` stores one block after the
   * other, a `has` then a `put`, which bound a stream to the disk's
   * latency). The block brokers (bitswap) are told once the blocks are on
   * disk, so a want that arrived meanwhile is served (Helia's `put` tells
   * them before it stores, so every caller tells them again once stored).
   */
  private async store (blocks: Array<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): Promise<void> {
    if (await this.writeDirect(blocks, options)) return
    const { local } = this.components
    await Promise.all(blocks.map(async ({ cid, bytes }) => local.put(cid, bytes, options)))
  }

  /**
   * Stores blocks straight to LevelDB (local-writer.ts); false, having
   * stored nothing, when the caller must store them itself. A direct write
   * was found through the blockstore (the writer checks its first), which
   * proves the reader's key layout: its fast misses are answers from then on.
   */
  private async writeDirect (blocks: Array<{ cid: CID, bytes: Uint8Array }>, options?: AbortOptions): Promise<boolean> {
    if (!(await this.writer.write(blocks, options))) return false
    this.reader.prove()
    return true
  }

  /** Tells the block brokers of stored blocks */
  private async announce (cids: CID[], options?: AbortOptions): Promise<void> {
    const { announce } = this.components
    if (announce == null) return
    try {
      await announce(cids, options)
    } catch (err: any) {
      // stored all the same: peers that want them ask again
      if (options?.signal?.aborted !== true) this.log.error('could not announce %d stored blocks - %e', cids.length, err)
    }
  }

  private waiterFor (key: string): Waiter {
    let waiter = this.waiters.get(key)
    if (waiter == null) {
      waiter = deferred()
      this.waiters.set(key, waiter)
    }
    return waiter
  }

  /**
   * Waits for a waiter, the caller's abort or stop (false). A walker
   * catching up behind a stream waits here once per node. The store's own
   * signal lives long: watched through `onAbort` (see on-abort.ts); the
   * caller's is the fetch's own (`withTimeout`'s), gone with it, so a plain
   * listener. A composite `AbortSignal.any()` per wait cost ~14% of an
   * in-process catch-up's CPU (nodes per CPU-second, 3 alternated pairs).
   */
  private async wait (waiter: Waiter, options?: AbortOptions): Promise<boolean> {
    const stopped = this.controller.signal
    const caller = options?.signal
    if (stopped.aborted || caller?.aborted === true) return false
    return new Promise<boolean>(resolve => {
      let offStop = (): void => {}
      const finish = (found: boolean): void => {
        offStop()
        caller?.removeEventListener('abort', onCallerAbort)
        resolve(found)
      }
      const onCallerAbort = (): void => { finish(false) }
      offStop = onAbort(stopped, () => { finish(false) })
      caller?.addEventListener('abort', onCallerAbort, { once: true })
      void waiter.promise.then(finish)
    })
  }
}

/** Whether identify has run on a peer: it stores the agent (or protocol) version with the protocol list */
function identified (record?: { metadata?: Map<string, unknown> }): boolean {
  return record?.metadata?.has('AgentVersion') === true || record?.metadata?.has('ProtocolVersion') === true
}

function deferred (): Waiter {
  let resolve!: (found: boolean) => void
  const promise = new Promise<boolean>(_resolve => { resolve = _resolve })
  return { promise, resolve }
}

/**
 * Creates a DAG blockstore that fetches missing blocks through the
 * block-sync protocol, falling back to `components.fallback`.
 * `createHeliaCRDT()` builds one over the Helia node.
 */
export function syncingBlockstore (components: SyncingBlockstoreComponents, init: SyncingBlockstoreInit = {}): SyncingBlockstore {
  return new BlockSyncingBlockstore(components, init)
}
