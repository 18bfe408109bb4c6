/**
 * The replicator: everything that talks to other replicas through the
 * Broadcaster. It receives heads and walks the branches they point to,
 * announces local heads (at once or batched), rebroadcasts heads nobody else
 * announced lately, and resumes unfinished walks (repair).
 */

import toBuffer from 'it-to-buffer'
import { decodeCarriedBlocks, encodeBroadcastWithBlocks } from '../codec/broadcast-blocks.js'
import { decodeBroadcast, MAX_BROADCAST_SIZE, splitBroadcast } from '../codec/broadcast.js'
import { isMalformed } from '../errors.js'
import { delay, jitter } from '../utils.js'
import { HeadQueue } from './head-queue.js'
import type { DAGBlockstore, Engine } from './engine.js'
import type { HeadOutcome, QueuedHead } from './head-queue.js'
import type { ReceivedPayload } from './payload-queue.js'
import type { Walker } from './walker.js'
import type { BroadcastHead } from '../codec/broadcast.js'
import type { Head } from '../crdt/heads.js'
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
  /**
   * Like `next()`, with the announcing peer and the decoded heads when the
   * transport knows them; used instead of `next()` when present
   */
  nextPayload?(options?: AbortOptions): Promise<ReceivedPayload>
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
  /** Announced heads fetched and walked at once */
  headSlots: number
  /** Time (ms) to wait for an announced head's block */
  headTimeout: number
  /** Heads kept waiting per announcer */
  maxQueuedHeadsPerAnnouncer: number
  /** Heads kept waiting in all */
  maxQueuedHeads: number
  /** Failed heads in a row after which an announcer is deprioritised */
  penaltyThreshold: number
  /** Bytes of head blocks carried in a broadcast at most; 0 carries none */
  broadcastBlocksMaxSize?: number
}

/** Every this many repair intervals, branches given up are tried once more (daily at the default interval) */
export const GIVEN_UP_RETRY_EVERY = 24

/** Heads announced by others remembered until the next rebroadcast */
const MAX_SEEN = 65_536

/** Room kept free per carried block for its field tag and length in a size-limited broadcast */
const CARRY_SLACK = 1024

/** Pause after the Broadcaster's `next()` fails, before asking again */
const NEXT_RETRY_DELAY = 100

export class Replicator {
  private readonly init: ReplicatorInit
  private readonly engine: Engine
  private readonly walker: Walker
  private readonly log: Logger
  /** Aborted by stop(); a new one is made by each start(), so the replicator can restart */
  private controller = new AbortController()
  private readonly tasks = new Set<Promise<unknown>>()
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  /** Heads announced by others since the last rebroadcast, by CID string */
  private readonly seen = new Set<string>()
  private batch: BroadcastHead[] = []
  private batchTimer?: ReturnType<typeof setTimeout>
  private repairing?: Promise<void>
  private repairTicks = 0
  private readonly queue: HeadQueue
  /** The last walk of each announcer, when walks of one announcer run one at a time */
  private readonly walking = new Map<string, Promise<void>>()
  /** Payloads read from the Broadcaster since start */
  public received = 0
  /** Of those, payloads whose heads have all been walked (or given up) */
  private handled = 0
  /** Callbacks of `synced()` calls, run whenever `handled` changes */
  private readonly progressWaiters = new Set<() => void>()

  constructor (init: ReplicatorInit) {
    this.init = init
    this.engine = init.engine
    this.walker = init.walker
    this.log = init.log
    this.queue = new HeadQueue({
      slots: init.headSlots,
      maxPerAnnouncer: init.maxQueuedHeadsPerAnnouncer,
      maxQueued: init.maxQueuedHeads,
      penaltyThreshold: init.penaltyThreshold,
      run: async head => {
        const turn = this.handleHead(head)
        this.track(turn)
        return turn
      }
    })
  }

  get signal (): AbortSignal {
    return this.controller.signal
  }

  /** Starts the receive loop, the rebroadcast and repair timers, and a first repair when one is due */
  async start (): Promise<void> {
    if (this.controller.signal.aborted) this.controller = new AbortController()
    this.queue.reopen()
    this.seen.clear()
    this.received = 0
    this.handled = 0
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
    this.queue.close()
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    this.notifyProgress()
    while (this.tasks.size > 0) {
      await Promise.allSettled([...this.tasks])
    }
  }

  /**
   * Resolves once every payload read from the Broadcaster before this call
   * has been handled: its heads walked and merged, or given up. Rejects when
   * `options.signal` aborts or the replicator stops first.
   */
  async synced (options?: AbortOptions): Promise<void> {
    // let the reader take what the Broadcaster already holds (it does so in microtasks)
    await new Promise(resolve => setTimeout(resolve, 0))
    const target = this.received
    const signal = options?.signal == null ? this.signal : AbortSignal.any([options.signal, this.signal])
    while (this.handled < target) {
      signal.throwIfAborted()
      await new Promise<void>(resolve => {
        const wake = (): void => {
          this.progressWaiters.delete(wake)
          signal.removeEventListener('abort', wake)
          resolve()
        }
        this.progressWaiters.add(wake)
        signal.addEventListener('abort', wake, { once: true })
      })
    }
    signal.throwIfAborted()
  }

  private notifyProgress (): void {
    for (const wake of [...this.progressWaiters]) wake()
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
   * Handles one payload from the Broadcaster: decodes it (unless the
   * transport did) and queues every head it names, fairly between
   * announcers. Resolves once every head had its turn. A malformed payload
   * is logged and skipped.
   */
  async handleBroadcast (data: Uint8Array, from = '', decoded?: Map<string, CID[]>): Promise<void> {
    let byDag: Map<string, CID[]>
    try {
      byDag = decoded ?? decodeBroadcast(data)
    } catch (err: any) {
      this.log.error('skipping broadcast - %e', err)
      return
    }
    const turns: Array<Promise<void>> = []
    for (const [dagName, cids] of byDag) {
      // a replica with no heads for a DAG builds on every head it hears of
      const adopt = this.engine.heads.count(dagName) === 0
      for (const cid of cids) {
        this.remember(cid)
        turns.push(this.queue.add({ cid, dagName, announcer: from, adopt }))
      }
    }
    await Promise.all(turns)
  }

  /** Heads waiting for their turn, handled, and dropped from full queues */
  get headStats (): { queued: number, inFlight: number, dropped: number, penalisedAnnouncers: number, walks: number } {
    return {
      queued: this.queue.waiting,
      inFlight: this.queue.inFlight,
      dropped: this.queue.dropped,
      penalisedAnnouncers: this.queue.penalised,
      walks: this.walker.walks
    }
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

  /**
   * One announced head's turn: fetched within the head deadline (the
   * announcer asked first), recorded as a walk root, adopted when its DAG
   * had no heads, and walked. With `multiHeadProcessing` off, one walk per
   * announcer at a time.
   */
  private async handleHead (head: QueuedHead): Promise<HeadOutcome> {
    const { cid, announcer } = head
    const signal = this.signal
    if (!this.engine.reserve(cid)) return 'skipped'
    let walking = false
    try {
      if (await this.engine.isProcessed(cid, { signal })) return 'skipped'
      // The head is fetched before it is recorded as the root of a walk, as
      // go-ds-crdt does: a head whose block never arrives (junk, or a writer
      // out of reach) leaves nothing behind. If the block exists, its writer
      // rebroadcasts it or a later node links to it.
      const preferPeer = announcer === '' ? undefined : announcer
      const node = await this.engine.fetchNode(cid, this.init.blockstore, { signal, timeout: this.init.headTimeout, preferPeer })
      if (!(await this.engine.addRoot(cid, { signal }))) return 'skipped'
      // only for the DAG it was announced in: a node cannot slip into another DAG's heads this way
      const alongside = head.adopt && node.delta.dagName === head.dagName
      if (alongside || this.engine.heads.count(node.delta.dagName) === 0) {
        // A replica with no heads for this DAG builds on what it hears (every
        // head of the broadcast), so its first writes do not start an orphan
        // branch.
        await this.engine.adoptHead(node, { signal, alongside })
      }
      walking = true
      await this.serialised(announcer, async () => {
        await this.walker.walk([{ cid, node }], { signal, preferPeer })
      })
      return 'ok'
    } catch (err: any) {
      if (signal.aborted) return 'skipped'
      if (isMalformed(err)) {
        this.log.error('skipping malformed head %c - %e', cid, err)
        await this.engine.giveUp(cid, `malformed block (${String(err.name)})`).catch(() => {})
        return 'failed'
      }
      this.log.error('could not sync head %c - %e', cid, err)
      // a walk that linked to this head while we held it left it to us
      if (walking || await this.engine.isPending(cid).catch(() => false)) {
        await this.engine.markDirty().catch(() => {})
      }
      return walking ? 'ok' : 'failed'
    } finally {
      if (!walking) this.engine.release(cid)
    }
  }

  /** Runs walks of one announcer one after the other unless `multiHeadProcessing` is on */
  private async serialised (announcer: string, fn: () => Promise<void>): Promise<void> {
    if (this.init.multiHeadProcessing) {
      await fn()
      return
    }
    const before = this.walking.get(announcer) ?? Promise.resolve()
    const mine = before.then(fn)
    const tail = mine.catch(() => {})
    this.walking.set(announcer, tail)
    try {
      await mine
    } finally {
      if (this.walking.get(announcer) === tail) this.walking.delete(announcer)
    }
  }

  /** Remembers a head others announced, so the next rebroadcast leaves it out (bounded) */
  private remember (cid: CID): void {
    if (this.seen.size >= MAX_SEEN) this.seen.clear()
    this.seen.add(cid.toString())
  }

  /**
   * Reads broadcasts and queues their heads: walks run outside this loop,
   * so a head that never arrives delays only its own turn.
   */
  private async receiveLoop (broadcaster: Broadcaster): Promise<void> {
    const signal = this.signal
    while (!signal.aborted) {
      let payload: ReceivedPayload
      try {
        payload = broadcaster.nextPayload != null
          ? await broadcaster.nextPayload({ signal })
          : { data: await broadcaster.next({ signal }) }
      } catch (err: any) {
        if (signal.aborted) return
        this.log.error('broadcaster failed to deliver - %e', err)
        await delay(NEXT_RETRY_DELAY, { signal }).catch(() => {})
        continue
      }
      this.received++
      // carried blocks land before the heads are queued, so their walks find them stored
      await this.storeCarriedBlocks(payload.data)
      this.handleBroadcast(payload.data, payload.from ?? '', payload.heads).catch((err: any) => {
        if (!signal.aborted) this.log.error('could not handle broadcast - %e', err)
      }).finally(() => {
        // every head of the payload had its turn: walked and merged, or given up
        this.handled++
        this.notifyProgress()
      })
    }
  }

  /**
   * Announces heads, in as many broadcasts as other replicas' limits need;
   * with `carry` (first announcements, not rebroadcasts) a payload that fits
   * alone carries the heads' blocks too, within `broadcastBlocksMaxSize` and
   * the room the size limit leaves
   */
  private async send (heads: BroadcastHead[], carry = true): Promise<void> {
    if (heads.length === 0 || this.init.broadcaster == null) return
    let payloads = splitBroadcast(heads)
    const maxBlocks = Math.min(this.init.broadcastBlocksMaxSize ?? 0, MAX_BROADCAST_SIZE - (payloads[0]?.byteLength ?? 0) - CARRY_SLACK)
    if (carry && payloads.length === 1 && maxBlocks > 0) {
      try {
        payloads = [encodeBroadcastWithBlocks(heads, await this.headBlocks(heads), maxBlocks)]
      } catch (err: any) {
        this.log('could not carry head blocks, announcing heads only - %e', err)
      }
    }
    for (const payload of payloads) {
      try {
        await this.init.broadcaster.broadcast(payload, { signal: this.signal })
      } catch (err: any) {
        // not fatal: heads are rebroadcast every rebroadcastInterval
        this.log('broadcast failed, heads will be rebroadcast - %e', err)
        return
      }
    }
  }

  /** The blocks of heads to carry in a broadcast: those stored locally, while they fit the cap */
  private async headBlocks (heads: BroadcastHead[]): Promise<Array<{ cid: CID, bytes: Uint8Array }>> {
    const max = this.init.broadcastBlocksMaxSize ?? 0
    const out: Array<{ cid: CID, bytes: Uint8Array }> = []
    let size = 0
    for (const { cid } of heads) {
      if (size >= max || !(await this.init.blockstore.has(cid))) continue
      const bytes = await toBuffer(this.init.blockstore.get(cid, { signal: this.signal }))
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
      // now and then, branches given up are tried once more
      if (++this.repairTicks % GIVEN_UP_RETRY_EVERY === 0 && await this.engine.reviveGivenUp({ signal: this.signal }) > 0) {
        this.log('retrying branches given up earlier')
        await this.engine.markDirty()
      }
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
