/**
 * The replicator: everything that talks to other replicas through the
 * Broadcaster. It receives heads and walks the branches they point to,
 * announces local heads (at once or batched), rebroadcasts heads nobody else
 * announced lately, and resumes unfinished walks (repair).
 */

import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { decodeBroadcast } from './broadcast.js'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks } from './broadcast-blocks.js'
import { isMalformed } from './errors.js'
import { PayloadQueue } from './payload-queue.js'
import { delay, jitter } from './utils.js'
import type { BroadcastHead } from './broadcast.js'
import type { DAGBlockstore, Engine } from './engine.js'
import type { DecodedNode } from './dag-node.js'
import type { Head } from './heads.js'
import type { Walker } from './walker.js'
import type { Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/**
 * Announces heads to other replicas and hands over what they announce.
 * `pubsubBroadcaster()` implements it over libp2p gossipsub.
 */
export interface Broadcaster {
  /** Sends a payload to every other replica */
  broadcast(data: Uint8Array, options?: AbortOptions): Promise<void>
  /** Resolves with the next payload from another replica; rejects when aborted */
  next(options?: AbortOptions): Promise<Uint8Array>
}

export interface ReplicatorInit {
  engine: Engine
  walker: Walker
  blockstore: DAGBlockstore
  broadcaster?: Broadcaster
  log: Logger
  rebroadcastInterval: number
  repairInterval: number
  multiHeadProcessing: boolean
  broadcastBatchDelay: number
  /**
   * Queued broadcasts whose head blocks are fetched while earlier ones are
   * merged (the merge itself stays in order); 0 fetches nothing ahead
   */
  lookAhead: number
  /** Bytes of head blocks carried in a broadcast at most; 0 carries none */
  broadcastBlocksMaxSize?: number
}

/** Broadcasts read from the Broadcaster and kept while earlier ones are handled */
const MAX_INBOX = 1024

/** Pause after the Broadcaster's `next()` fails, before asking again */
const NEXT_RETRY_DELAY = 100

export class Replicator {
  private readonly init: ReplicatorInit
  private readonly engine: Engine
  private readonly walker: Walker
  private readonly log: Logger
  private readonly controller = new AbortController()
  private readonly tasks = new Set<Promise<unknown>>()
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  /** Heads announced by others since the last rebroadcast, by CID string */
  private readonly seen = new Set<string>()
  private batch: BroadcastHead[] = []
  private batchTimer?: ReturnType<typeof setTimeout>
  private repairing?: Promise<void>
  /** Head blocks being fetched ahead of their turn, by CID string */
  private readonly prefetched = new Map<string, Promise<DecodedNode>>()
  /** The heads of queued payloads, decoded once while they wait (none for a malformed one) */
  private readonly queuedHeads = new WeakMap<Uint8Array, CID[]>()

  constructor (init: ReplicatorInit) {
    this.init = init
    this.engine = init.engine
    this.walker = init.walker
    this.log = init.log
  }

  get signal (): AbortSignal {
    return this.controller.signal
  }

  /** Starts the receive loop, the rebroadcast and repair timers, and a first repair when one is due */
  async start (): Promise<void> {
    if (this.init.broadcaster != null) {
      this.track(this.receiveLoop(this.init.broadcaster))
      this.scheduleRebroadcast()
    }
    const due = this.init.repairInterval > 0 && (await this.engine.isDirty() || (await this.engine.pendingBranches()).length > 0)
    if (due) {
      this.log('unfinished walks found at start, repairing')
      this.track(this.repair().catch(() => {}))
    }
    this.scheduleRepair()
  }

  async stop (): Promise<void> {
    if (this.batchTimer != null) {
      clearTimeout(this.batchTimer)
      this.batchTimer = undefined
      await this.flushBatch()
    }
    this.controller.abort()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    while (this.tasks.size > 0) {
      await Promise.allSettled([...this.tasks])
    }
  }

  /** Announces a new local head, replacing the heads it links to in a pending batch */
  async announce (head: Head, replaced: Head[]): Promise<void> {
    if (this.init.broadcaster == null || this.signal.aborted) return
    const announced = { cid: head.cid, dagName: head.dagName }
    if (this.init.broadcastBatchDelay <= 0) {
      await this.send([announced])
      return
    }
    this.batch = this.batch.filter(h => !replaced.some(r => r.cid.equals(h.cid)))
    this.batch.push(announced)
    if (this.batchTimer == null) {
      this.batchTimer = setTimeout(() => {
        this.batchTimer = undefined
        this.track(this.flushBatch())
      }, this.init.broadcastBatchDelay)
    }
  }

  /**
   * Walks, in the background, nodes the caller has reserved (heads a local
   * write linked to before anyone had processed them)
   */
  walkInBackground (cids: CID[]): void {
    if (cids.length === 0) return
    const signal = this.signal
    this.track(this.walker.walk(cids.map(cid => ({ cid })), { signal }).catch(async () => {
      if (!signal.aborted) await this.engine.markDirty().catch(() => {})
    }))
  }

  /** Handles a payload handed over directly: stores the blocks it carries, then handles it */
  async receive (data: Uint8Array): Promise<void> {
    await this.storeCarriedBlocks(data)
    await this.handleBroadcast(data)
  }

  /**
   * Handles one payload from the Broadcaster: decodes it, and walks every
   * head it names. A malformed payload is logged and skipped.
   */
  async handleBroadcast (data: Uint8Array): Promise<void> {
    let byDag: Map<string, CID[]>
    try {
      byDag = decodeBroadcast(data)
    } catch (err: any) {
      this.log.error('skipping broadcast - %e', err)
      return
    }
    for (const cids of byDag.values()) {
      for (const cid of cids) this.seen.add(cid.toString())
    }
    await Promise.all([...byDag.values()].map(async cids => {
      for (const cid of cids) {
        const job = this.handleHead(cid)
        if (this.init.multiHeadProcessing) this.track(job)
        else await job
      }
    }))
  }

  /**
   * Walks every branch left unfinished (the `w/` records), then marks the
   * store clean if none is left.
   */
  async repair (options?: AbortOptions): Promise<void> {
    this.repairing ??= this.runRepair(options).finally(() => { this.repairing = undefined })
    return this.repairing
  }

  private async runRepair (options?: AbortOptions): Promise<void> {
    const signal = options?.signal == null ? this.signal : AbortSignal.any([options.signal, this.signal])
    const pending = await this.engine.pendingBranches({ signal })
    const starts = pending.filter(cid => this.engine.reserve(cid)).map(cid => ({ cid }))
    this.log('repairing from %d unfinished branches', starts.length)
    try {
      await this.walker.walk(starts, { signal })
    } catch (err) {
      if (!signal.aborted) await this.engine.markDirty()
      throw err
    }
    if ((await this.engine.pendingBranches({ signal })).length === 0) {
      await this.engine.markClean({ signal })
      this.log('repair finished, store is clean')
    }
  }

  private async handleHead (cid: CID): Promise<void> {
    const signal = this.signal
    if (!this.engine.reserve(cid)) {
      this.takePrefetched(cid)
      return
    }
    let walking = false
    try {
      if (await this.engine.isProcessed(cid, { signal })) {
        this.takePrefetched(cid)
        return
      }
      // The head is fetched before it is recorded as the root of a walk, as
      // go-ds-crdt does: a head whose block never arrives (junk, or a writer
      // out of reach) leaves nothing behind. If the block exists, its writer
      // rebroadcasts it or a later node links to it.
      const node = await (this.takePrefetched(cid) ?? this.engine.fetchNode(cid, this.init.blockstore, { signal }))
      if (!(await this.engine.addRoot(cid, { signal }))) return
      if (this.engine.heads.count(node.delta.dagName) === 0) {
        // A replica with no heads for this DAG builds on what it hears, so
        // its first writes do not start an orphan branch.
        await this.engine.adoptHead(node, { signal })
      }
      walking = true
      await this.walker.walk([{ cid, node }], { signal })
    } catch (err: any) {
      if (signal.aborted) return
      if (isMalformed(err)) {
        this.log.error('skipping malformed head %c - %e', cid, err)
        await this.engine.dropPending(cid).catch(() => {})
        return
      }
      this.log.error('could not sync head %c - %e', cid, err)
      // a walk that linked to this head while we held it left it to us
      if (walking || await this.engine.isPending(cid).catch(() => false)) {
        await this.engine.markDirty().catch(() => {})
      }
    } finally {
      if (!walking) this.engine.release(cid)
    }
  }

  /**
   * Reads broadcasts into an inbox and handles them in order. While one is
   * handled, the head blocks of the next `lookAhead` are fetched (fetching
   * has no side effects), so a stream of announcements costs one round
   * trip each only when the merge outpaces the network.
   */
  private async receiveLoop (broadcaster: Broadcaster): Promise<void> {
    const signal = this.signal
    const inbox = new PayloadQueue(MAX_INBOX)
    const reader = (async () => {
      while (!signal.aborted) {
        try {
          const data = await broadcaster.next({ signal })
          // before the payload is queued: the look-ahead must find them stored
          await this.storeCarriedBlocks(data)
          inbox.push(data)
        } catch (err: any) {
          if (signal.aborted) return
          this.log.error('broadcaster failed to deliver - %e', err)
          await delay(NEXT_RETRY_DELAY, { signal }).catch(() => {})
        }
      }
    })()
    try {
      while (!signal.aborted) {
        let data: Uint8Array
        try {
          data = await inbox.next({ signal })
        } catch {
          return
        }
        if (!this.init.multiHeadProcessing) this.fetchAhead([data, ...inbox.peek(this.init.lookAhead)])
        await this.handleBroadcast(data).catch((err: any) => {
          if (!signal.aborted) this.log.error('could not handle broadcast - %e', err)
        })
      }
    } finally {
      inbox.close()
      await reader
      this.prefetched.clear()
    }
  }

  /**
   * Starts fetching the head blocks of the broadcast about to be handled and
   * of the next queued ones (malformed ones are left to their turn). Fetches
   * for heads no longer among them (a full inbox dropped their broadcast)
   * are forgotten.
   */
  private fetchAhead (payloads: Uint8Array[]): void {
    const heads = payloads.flatMap(data => this.headsOf(data))
    const wanted = new Set(heads.map(cid => cid.toString()))
    for (const key of this.prefetched.keys()) {
      if (!wanted.has(key)) this.prefetched.delete(key)
    }
    for (const cid of heads) {
      const key = cid.toString()
      if (this.prefetched.has(key) || this.prefetched.size >= this.init.lookAhead) continue
      const fetching = this.engine.fetchNode(cid, this.init.blockstore, { signal: this.signal })
      // awaited by stop() even when forgotten here
      this.track(fetching.catch(() => {}))
      this.prefetched.set(key, fetching)
    }
  }

  private headsOf (data: Uint8Array): CID[] {
    let heads = this.queuedHeads.get(data)
    if (heads == null) {
      try {
        heads = [...decodeBroadcast(data).values()].flat()
      } catch {
        heads = []
      }
      this.queuedHeads.set(data, heads)
    }
    return heads
  }

  /** The fetch started ahead for `cid`, if any, which this forgets */
  private takePrefetched (cid: CID): Promise<DecodedNode> | undefined {
    const key = cid.toString()
    const fetching = this.prefetched.get(key)
    this.prefetched.delete(key)
    return fetching
  }

  /** Broadcasts heads; with `carry`, their blocks too (first announcements, not rebroadcasts) */
  private async send (heads: BroadcastHead[], carry = true): Promise<void> {
    if (heads.length === 0 || this.init.broadcaster == null) return
    try {
      const payload = encodeBroadcastWithBlocks(heads, carry ? await this.headBlocks(heads) : [], this.init.broadcastBlocksMaxSize ?? 0)
      await this.init.broadcaster.broadcast(payload, { signal: this.signal })
    } catch (err: any) {
      // not fatal: heads are rebroadcast every rebroadcastInterval
      this.log('broadcast failed, heads will be rebroadcast - %e', err)
    }
  }

  /** The blocks of heads to carry in a broadcast: those stored locally, while they fit the cap */
  private async headBlocks (heads: BroadcastHead[]): Promise<Array<{ cid: CID, bytes: Uint8Array }>> {
    const max = this.init.broadcastBlocksMaxSize ?? 0
    const out: Array<{ cid: CID, bytes: Uint8Array }> = []
    let size = 0
    for (const { cid } of heads) {
      if (size >= max || !(await this.init.blockstore.has(cid))) continue
      const chunks: Uint8Array[] = []
      for await (const chunk of this.init.blockstore.get(cid, { signal: this.signal })) chunks.push(chunk)
      const bytes = chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
      if (size + bytes.byteLength > max) continue
      size += bytes.byteLength
      out.push({ cid, bytes })
    }
    return out
  }

  /**
   * Stores the verified head blocks a broadcast carries, so its heads merge
   * without a fetch; blocks that are not its heads or fail their hash are
   * logged and dropped (the heads are then fetched as usual)
   */
  private async storeCarriedBlocks (data: Uint8Array): Promise<void> {
    const { blocks, rejected } = await decodeCarriedBlocks(data, { skip: async cid => this.init.blockstore.has(cid) })
    if (rejected > 0) this.log.error('dropped %d carried blocks that do not match their hash', rejected)
    for (const { cid, bytes } of blocks) {
      try {
        await this.init.blockstore.put(cid, bytes, { signal: this.signal })
      } catch (err: any) {
        if (!this.signal.aborted) this.log.error('could not store carried block %c - %e', cid, err)
      }
    }
  }

  private async flushBatch (): Promise<void> {
    const heads = this.batch
    this.batch = []
    await this.send(heads)
  }

  private scheduleRebroadcast (): void {
    this.schedule(jitter(this.init.rebroadcastInterval), async () => {
      const heads = this.engine.heads.all().filter(h => !this.seen.has(h.cid.toString()))
      this.seen.clear()
      await this.send(heads.map(h => ({ cid: h.cid, dagName: h.dagName })), false)
      this.scheduleRebroadcast()
    })
  }

  private scheduleRepair (): void {
    if (this.init.repairInterval <= 0) return
    this.schedule(this.init.repairInterval, async () => {
      if (await this.engine.isDirty()) {
        await this.repair().catch(() => {})
      }
      this.scheduleRepair()
    })
  }

  private schedule (ms: number, fn: () => Promise<void>): void {
    if (this.signal.aborted) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      this.track(fn().catch(err => { this.log.error('background task failed - %e', err) }))
    }, ms)
    this.timers.add(timer)
  }

  private track (task: Promise<unknown>): void {
    this.tasks.add(task)
    const done = (): void => { this.tasks.delete(task) }
    task.then(done, (err: any) => {
      done()
      if (!this.signal.aborted) this.log.error('background task failed - %e', err)
    })
  }
}
