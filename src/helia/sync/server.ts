/**
 * The serving side of the block-sync protocol: answers a request by walking
 * the local blockstore down from the wanted CIDs, highest node first, and
 * streaming each block.
 *
 * Invariants:
 * - Only blocks already in the local blockstore are sent (reads are
 *   offline: a request never makes this node fetch anything).
 * - The walk is a max-heap by height. Heights strictly decrease along
 *   links, so every node is sent after all of its parents that the walk
 *   reaches. The heap holds the walk's frontier, not the DAG; a set of the
 *   CIDs queued so far (bounded by the request's block cap) keeps any block
 *   from being sent twice, even in a DAG whose heights are not honest.
 * - The walk does not descend into CIDs the asker says it has, nor past
 *   blocks this node lacks or cannot decode (the asker falls back to bitswap
 *   for those).
 * - When the asker says it holds everything below its `have` CIDs
 *   (`complete`: nothing of its own unfinished; a replica mid-walk has
 *   heads whose branches are not all there yet), the walk also goes down
 *   from those this node has, in the same heap (at equal heights before the
 *   wanted side), as far as the wanted side goes and for at most
 *   `HAVE_WALK_BUDGET` reads: a wanted branch that joins the asker's DAG
 *   below one of its heads (a writer that had seen an older state) stops
 *   there, instead of going down to the root.
 * - A request is capped by the asker's and this server's block and byte
 *   limits; writes wait for the stream to drain (back-pressure); a stream
 *   whose request does not arrive within the idle timeout is reset.
 */

import { cidKey } from '../../codec/cid-key.js'
import { decodeNode } from '../../codec/dag-node.js'
import { SyncProtocolError } from '../../errors.js'
import { FrameReader, FrameWriter, IdleWatchdog } from './frames.js'
import { localReader } from './local-reader.js'
import { DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BLOCK_SIZE, DEFAULT_MAX_BLOCKS, DEFAULT_MAX_BYTES, DEFAULT_MAX_STREAMS_PER_PEER, MAX_REQUEST_SIZE, SYNC_PROTOCOL, decodeRequest, encodeBlock } from './protocol.js'
import type { LocalReader } from './local-reader.js'
import type { BlockRequest } from './protocol.js'
import type { ComponentLogger, Logger, Stream, StreamHandler, StreamHandlerOptions } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** The parts of libp2p the server registers with */
export interface SyncServerLibp2p {
  handle(protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void>
  unhandle(protocol: string, options?: AbortOptions): Promise<void>
}

/** The local blockstore the server reads; `offline` keeps Helia's from going to the network */
export interface SyncServerBlockstore {
  has(cid: CID, options?: AbortOptions): boolean | Promise<boolean>
  get(cid: CID, options?: AbortOptions & { offline?: boolean }): AsyncIterable<Uint8Array> | Iterable<Uint8Array>
  /** Helia's wrapping blockstores hand out the store they wrap (see local-reader.ts) */
  unwrap?(): unknown
}

export interface SyncServerComponents {
  libp2p: SyncServerLibp2p
  blockstore: SyncServerBlockstore
  logger: ComponentLogger
}

export interface SyncServerInit {
  /**
   * Blocks sent for one request at most
   *
   * @default 8192
   */
  maxBlocks?: number
  /**
   * Bytes of blocks sent for one request at most
   *
   * @default 67_108_864
   */
  maxBytes?: number
  /**
   * Incoming sync streams open at once on one connection
   *
   * @default 2
   */
  maxStreamsPerPeer?: number
  /**
   * Wait (ms) for the request, and for the asker to take blocks, before the stream is reset
   *
   * @default 10_000
   */
  idleTimeout?: number
}

/** A registered sync protocol handler */
export interface SyncServer {
  /** Registers the protocol handler */
  start(options?: AbortOptions): Promise<void>
  /** Unregisters the handler and ends every stream being served */
  stop(options?: AbortOptions): Promise<void>
  /** Blocks sent since start */
  readonly sent: number
}

/**
 * Blocks below the asker's heads read at most for one request, to learn
 * what it holds (see the invariants above): past that, the walk sends
 * what it cannot tell the asker holds
 */
export const HAVE_WALK_BUDGET = 4096

/** A walk runs at most this long (ms) without letting other work in */
const WALK_SLICE = 10
/** Block frames are sent together once this many bytes are waiting */
const SEND_BATCH_BYTES = 64 * 1024

interface Queued {
  cid: CID
  /** Its `cidKey` */
  key: string
  bytes: Uint8Array
  height: number
  links: CID[]
  /** On the asker's side: reached from one of its heads (it holds it), walked only to learn what it holds */
  had: boolean
  /** Named in the request's `want`: sent even when the asker seems to hold it */
  wanted: boolean
}

class BlockSyncServer implements SyncServer {
  private readonly components: SyncServerComponents
  private readonly log: Logger
  private readonly maxBlocks: number
  private readonly maxBytes: number
  private readonly maxStreams: number
  private readonly idleTimeout: number
  private controller = new AbortController()
  private readonly serving = new Set<Promise<void>>()
  private readonly reader: LocalReader
  public sent = 0

  constructor (components: SyncServerComponents, init: SyncServerInit) {
    this.components = components
    this.log = components.logger.forComponent('datastore-crdt:sync:server')
    this.maxBlocks = init.maxBlocks ?? DEFAULT_MAX_BLOCKS
    this.maxBytes = init.maxBytes ?? DEFAULT_MAX_BYTES
    this.maxStreams = init.maxStreamsPerPeer ?? DEFAULT_MAX_STREAMS_PER_PEER
    this.idleTimeout = init.idleTimeout ?? DEFAULT_IDLE_TIMEOUT
    this.reader = localReader(components.blockstore, (err) => {
      this.log('in-process block reads disagree with the blockstore, reading through it from now on - %e', err)
    })
  }

  async start (options?: AbortOptions): Promise<void> {
    this.controller = new AbortController()
    await this.components.libp2p.handle(SYNC_PROTOCOL, (stream) => {
      const job = this.serve(stream)
      this.serving.add(job)
      void job.finally(() => this.serving.delete(job))
    }, { maxInboundStreams: this.maxStreams, signal: options?.signal })
  }

  async stop (options?: AbortOptions): Promise<void> {
    await this.components.libp2p.unhandle(SYNC_PROTOCOL, options).catch(err => { this.log('unhandle failed - %e', err) })
    this.controller.abort()
    await Promise.allSettled([...this.serving])
  }

  private async serve (stream: Stream): Promise<void> {
    const watchdog = new IdleWatchdog(this.idleTimeout, this.controller.signal)
    const reader = new FrameReader(stream, { maxFrame: MAX_REQUEST_SIZE, highWater: MAX_REQUEST_SIZE, idleTimeout: this.idleTimeout })
    try {
      const frame = await reader.next({ signal: watchdog.signal })
      if (frame == null) throw new SyncProtocolError('Stream ended before a request')
      const request = decodeRequest(frame)
      reader.dispose()
      const sent = await this.walk(stream, request, watchdog)
      this.sent += sent
      this.log.trace('sent %d blocks for %d wanted', sent, request.want.length)
      await stream.close({ signal: watchdog.signal })
    } catch (err: any) {
      if (!this.controller.signal.aborted) this.log('sync stream ended with an error - %e', err)
      stream.abort(err)
    } finally {
      watchdog.stop()
      reader.dispose()
    }
  }

  /** Streams blocks below the wanted CIDs, highest first; returns how many were sent */
  private async walk (stream: Stream, request: BlockRequest, watchdog: IdleWatchdog): Promise<number> {
    const maxBlocks = Math.min(request.maxBlocks > 0 ? request.maxBlocks : this.maxBlocks, this.maxBlocks)
    const maxBytes = Math.min(request.maxBytes > 0 ? request.maxBytes : this.maxBytes, this.maxBytes)
    // CIDs keyed by their bytes, not their base32 text (see cid-key.ts)
    const have = new Set(request.have.map(cidKey))
    const heap = new MaxHeap()
    // the wanted side: queued so far; the asker's side: nodes it holds, as far as read
    const queued = new Set<string>()
    const had = new Set<string>()
    let wanting = 0
    let haveReads = 0
    const push = (cid: CID, key: string, bytes: Uint8Array | undefined, side: { had: boolean, wanted: boolean }): void => {
      const node = this.decode(cid, key, bytes, side)
      if (node == null) return
      heap.push(node)
      if (!node.had) wanting++
    }
    // returns a promise only when the block is read asynchronously
    const enqueue = (cid: CID, side: { had: boolean, wanted: boolean }): Promise<void> | undefined => {
      const key = cidKey(cid)
      if (side.had) {
        // the asker holds it, and all below it
        if (had.has(key) || haveReads >= HAVE_WALK_BUDGET) return
        had.add(key)
        haveReads++
      } else {
        // a wanted CID is sent even when listed as had (an adopted head the asker never walked)
        if (queued.has(key) || (!side.wanted && (have.has(key) || had.has(key)))) return
        queued.add(key)
      }
      const bytes = this.read(cid)
      if (bytes instanceof Promise) return bytes.then(b => { push(cid, key, b, side) })
      push(cid, key, bytes, side)
    }
    // undefined when every block was read in-process; links read asynchronously are read concurrently
    const enqueueAll = (cids: CID[], side: { had: boolean, wanted: boolean }): Promise<unknown> | undefined => {
      let pending: Array<Promise<void>> | undefined
      for (const cid of cids) {
        const p = enqueue(cid, side)
        if (p != null) (pending ??= []).push(p)
      }
      return pending == null ? undefined : Promise.all(pending)
    }
    await enqueueAll(request.want, WANTED)
    // a wanted CID the asker lists as had too is one it never walked (an adopted head): nothing below it counts as held
    if (request.complete === true) await enqueueAll(request.have.filter(cid => !queued.has(cidKey(cid))), HAD)

    const writer = new FrameWriter(stream, SEND_BATCH_BYTES)
    let sent = 0
    let bytes = 0
    let slice = Date.now()
    // nodes of the asker's side left alone stop nothing: the walk ends with the wanted side
    while (sent < maxBlocks && wanting > 0) {
      const node = heap.pop()
      if (node == null) break
      let reading: Promise<unknown> | undefined
      if (node.had) {
        // higher than every wanted node left: what it links, the asker holds too
        reading = enqueueAll(node.links, HAD)
      } else {
        wanting--
        // reached from one of the asker's heads since it was queued
        if (!node.wanted && had.has(node.key)) continue
        if (sent > 0 && bytes + node.bytes.byteLength > maxBytes) break
        await writer.write(encodeBlock(node.cid, node.bytes), { signal: watchdog.signal })
        watchdog.kick()
        sent++
        bytes += node.bytes.byteLength
        reading = enqueueAll(node.links, BELOW)
      }
      if (reading != null) {
        // the asker gets what is ready while the disk is read
        await writer.flush({ signal: watchdog.signal })
        await reading
      }
      // in-process reads never wait: give the event loop a turn now and then
      if (Date.now() - slice >= WALK_SLICE) {
        await writer.flush({ signal: watchdog.signal })
        await new Promise<void>(resolve => setImmediate(resolve))
        slice = Date.now()
      }
    }
    await writer.flush({ signal: watchdog.signal })
    return sent
  }

  /** A local block's bytes, in-process when the store allows; undefined when absent */
  private read (cid: CID): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const signal = this.controller.signal
    try {
      return this.reader.read(cid, { signal })
    } catch (err: any) {
      if (!signal.aborted) this.log.trace('not serving %c - %e', cid, err)
      return undefined
    }
  }

  /** A block decoded for the walk; undefined when absent, oversized or not a CRDT node */
  private decode (cid: CID, key: string, bytes: Uint8Array | undefined, side: { had: boolean, wanted: boolean }): Queued | undefined {
    if (bytes == null || bytes.byteLength > DEFAULT_MAX_BLOCK_SIZE) return undefined
    try {
      const node = decodeNode(cid, bytes)
      return { cid, key, bytes, height: node.delta.priority, links: node.links, had: side.had, wanted: side.wanted }
    } catch (err: any) {
      this.log.trace('not serving %c, not a CRDT node - %e', cid, err)
      return undefined
    }
  }
}

/** The sides of a queued node: wanted by the request, below a wanted one, or on the asker's side */
const WANTED = { had: false, wanted: true }
const BELOW = { had: false, wanted: false }
const HAD = { had: true, wanted: false }

/** Whether `a` comes out of the heap before `b`: higher first, and at equal heights the asker's side first */
function before (a: Queued, b: Queued): boolean {
  return a.height > b.height || (a.height === b.height && a.had && !b.had)
}

/** A binary max-heap of queued nodes by height (see `before`) */
class MaxHeap {
  private readonly items: Queued[] = []

  push (item: Queued): void {
    const items = this.items
    items.push(item)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(items[i], items[parent])) break
      ;[items[parent], items[i]] = [items[i], items[parent]]
      i = parent
    }
  }

  pop (): Queued | undefined {
    const items = this.items
    if (items.length === 0) return undefined
    const top = items[0]
    const last = items.pop() as Queued
    if (items.length > 0) {
      items[0] = last
      let i = 0
      while (true) {
        const l = 2 * i + 1
        const r = l + 1
        let max = i
        if (l < items.length && before(items[l], items[max])) max = l
        if (r < items.length && before(items[r], items[max])) max = r
        if (max === i) break
        ;[items[max], items[i]] = [items[i], items[max]]
        i = max
      }
    }
    return top
  }
}

/**
 * Creates the sync protocol server over a libp2p node and its local
 * blockstore. `createHeliaCRDT()` registers one per libp2p node.
 */
export function syncServer (components: SyncServerComponents, init: SyncServerInit = {}): SyncServer {
  return new BlockSyncServer(components, init)
}
