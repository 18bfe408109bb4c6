/**
 * The replicator: everything that talks to other replicas through the
 * Broadcaster. It receives heads and walks the branches they point to,
 * announces local heads (at once or batched), rebroadcasts heads nobody else
 * announced lately, and resumes unfinished walks (repair).
 */

import toBuffer from 'it-to-buffer'
import { encodeCarrying, verifyCarriedBlocks } from '../codec/broadcast-blocks.js'
import { decodeBroadcast, decodeBroadcastPayload, MAX_BROADCAST_SIZE, MAX_CARRIED_BELOW, splitBroadcast } from '../codec/broadcast.js'
import { cidKey } from '../codec/cid-key.js'
import { isMalformed } from '../errors.js'
import { BlockHandoff, delay, jitter } from '../utils.js'
import { MALFORMED_REASON } from './engine.js'
import { HeadQueue } from './head-queue.js'
import { nextPayloadOf } from './payload-queue.js'
import type { Engine, GivenUpBranch } from './engine.js'
import type { HeadOutcome, QueuedHead } from './head-queue.js'
import type { ReceivedPayload } from './payload-queue.js'
import type { SyncProgress } from './sync-meter.js'
import type { Walker } from './walker.js'
import type { CarriedBlock } from '../codec/broadcast-blocks.js'
import type { BroadcastHead, DecodedBroadcast } from '../codec/broadcast.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { Head } from '../crdt/heads.js'
import type { Broadcaster, DAGBlockstore, SyncOptions } from '../interfaces.js'
import type { Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/**
 * Decides which payloads are sent and acted on (trusted mode signs and
 * checks them; see src/trust/gate.ts). Absent, everything passes.
 */
export interface BroadcastGate {
  /** Bytes `seal` may add to a payload */
  readonly overhead: number
  /** The payload to send, or `undefined` to send nothing */
  seal(payload: Uint8Array, options?: AbortOptions): Promise<Uint8Array | undefined>
  /** Whether a received payload's heads and carried blocks may be taken */
  admit(payload: Uint8Array, options?: AbortOptions): Promise<boolean>
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
   * Local writes are announced at most once per this many ms (the first of
   * a burst at once, the rest together when the interval ends); 0 announces
   * each at once. Ignored while `broadcastBatchDelay` is set
   */
  announceInterval: number
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
  /**
   * Whether an announced head that is not processed here is nonetheless
   * merged already (it lies below a snapshot's covered heads); such a head
   * is skipped (see src/snapshot/cover.ts)
   */
  isCovered?(node: DecodedNode, options?: AbortOptions): Promise<boolean>
  /** Rewrites each payload before it is sent (adds the snapshot announcement) */
  decorate?(payload: Uint8Array): Uint8Array
  /**
   * Sees every payload received from the broadcaster, with its announcer
   * ('' when unknown), before its heads are queued; receiving waits for it
   * (a fresh replica installs an announced snapshot here first)
   */
  onPayload?(data: Uint8Array, from: string, options: AbortOptions): Promise<void> | void
  /** Bytes of head blocks carried in a broadcast at most; 0 carries none */
  broadcastBlocksMaxSize?: number
  /** Told when a head's turn ends; its `onProgress` goes into background walks and fetches */
  progress?: SyncProgress
  /** Signs outgoing and admits incoming payloads; absent admits all */
  gate?: BroadcastGate
}

/** Every this many repair intervals, branches given up are tried once more (daily at the default interval) */
export const GIVEN_UP_RETRY_EVERY = 24

/**
 * An announcer not heard from for this many rebroadcast intervals (or never)
 * counts as (re)appearing: a partition healed or a peer came back
 */
const RETURN_GAP_INTERVALS = 10

/** Whether one of `peers` is not on record as lacking the branch's block (so asking it may help) */
function notRefusedByAll (branch: GivenUpBranch, peers: string[]): boolean {
  return peers.some(peer => !(branch.refusedBy?.includes(peer) ?? false))
}

/** Announcers remembered with the time they were last heard from */
const MAX_ANNOUNCERS = 1024

/** Repair ticks between two revivals an (re)appearing announcer triggers, at least */
const REVIVE_MIN_TICKS = 6

/** Doublings of the wait between two periodic retries of one given-up branch, at most */
const MAX_RETRY_DOUBLINGS = 8

/** Heads announced by others remembered until the next rebroadcast */
const MAX_SEEN = 65_536

/**
 * Bytes a payload that carries blocks leaves free under the size limit for
 * what is added once it is built (the snapshot announcement, ~40 bytes)
 */
const DECORATION_ROOM = 256

/** Carried head blocks kept for their heads' turns (verified and stored), at most, and their bytes */
const MAX_HANDED_HEADS = 256
const MAX_HANDED_BYTES = 4 * 1024 * 1024

/** Payloads read ahead of the write that stores their carried blocks, and stored in one write, at most */
export const MAX_ARRIVING = 64

/** Bytes of payloads read ahead of that write, and stored in one write, at most (one payload may be larger) */
export const MAX_ARRIVING_BYTES = 1024 * 1024

/**
 * A local head waiting in a batch to be announced, with the nodes it
 * superseded there (newest first: each is linked from the head or from one
 * before it), whose blocks its announcement carries below its own
 */
interface GatheredHead extends BroadcastHead {
  below: CID[]
}

/** A payload read from the Broadcaster, decoded, waiting for its carried blocks to be stored */
interface Arrival {
  data: Uint8Array
  from: string
  heads: Map<string, CID[]>
  blocks: CarriedBlock[]
}

/** Pause after the Broadcaster's `next()` fails, before asking again */
const NEXT_RETRY_DELAY = 100

/**
 * A replica joining the topic hears our heads this soon (ms, plus up to
 * `GREETING_JITTER`), not at our next rebroadcast: joins within it share
 * one announcement, and another follows no sooner than a quarter of the
 * rebroadcast interval later. The jitter spreads the replicas that see the
 * same join, so those that hear another announce the same heads first stay
 * silent (as rebroadcasts do)
 */
const GREETING_DELAY = 20
const GREETING_JITTER = 80

export class Replicator {
  private readonly init: ReplicatorInit
  private readonly engine: Engine
  private readonly walker: Walker
  private readonly log: Logger
  /** Aborted by stop(); a new one is made by each start(), so the replicator can restart */
  private controller = new AbortController()
  private readonly tasks = new Set<Promise<unknown>>()
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  /** Heads announced by others since the last rebroadcast, by `cidKey()` */
  private readonly seen = new Set<string>()
  /** Local heads gathered for one announcement (`broadcastBatchDelay`, `announceInterval`) */
  private batch: GatheredHead[] = []
  /** The batch delay's timer, or the announce interval's while one is open */
  private batchTimer?: ReturnType<typeof setTimeout>
  private repairing?: Promise<void>
  private repairTicks = 0
  /** When each announcer was last heard from (ms), oldest first */
  private readonly lastHeard = new Map<string, number>()
  /**
   * Announcers heard for the first time or again after a silence, since the
   * last revival for them: at the next repair tick, the given-up branches
   * that one of them was not asked for are tried again
   */
  private readonly returners = new Set<string>()
  /**
   * Branches revived by the periodic retries, with how often and the tick
   * before which they are not revived that way again: each retry doubles
   * the wait (by retries, not by ticks), so junk nobody has stops costing
   * a walk every few ticks while a branch revived once is soon tried again
   */
  private readonly retries = new Map<string, { count: number, due: number }>()
  /** Replicas that joined the topic since the last repair tick: branches none of them was asked for are tried again */
  private readonly joins = new Set<string>()
  /** Stops the broadcaster's join notifications */
  private unwatchJoins?: () => void
  private lastRevivalTick = -Infinity
  /** Heads others announced since an announcement to replicas that joined was scheduled (while one is) */
  private greeting?: Set<string>
  /** When the last one went out (ms) */
  private lastGreeting = -Infinity
  private readonly queue: HeadQueue
  /** The last walk of each announcer, when walks of one announcer run one at a time */
  private readonly walking = new Map<string, Promise<void>>()
  /**
   * Head blocks carried in broadcasts, verified and stored, kept (bounded,
   * oldest dropped) until their head's turn takes them: the turn decodes
   * them without reading them back from the blockstore or hashing them
   * again
   */
  private readonly handed = new BlockHandoff<{ bytes: Uint8Array }>(MAX_HANDED_HEADS, MAX_HANDED_BYTES)
  /** Payloads read whose carried blocks are not stored yet, oldest first (see `storeArrivals()`) */
  private readonly arriving: Arrival[] = []
  /** Bytes of the payloads in `arriving` */
  private arrivingBytes = 0
  /** The run of `storeArrivals()` under way, if any */
  private storing?: Promise<void>
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
    // a greeting scheduled before a stop died with its timer
    this.greeting = undefined
    this.received = 0
    this.handled = 0
    if (this.init.broadcaster != null) {
      this.track(this.receiveLoop(this.init.broadcaster))
      this.scheduleRebroadcast()
      this.unwatchJoins = this.init.broadcaster.watchJoins?.(peer => { this.joined(peer) })
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
    }
    // what a batch or an open interval gathered goes out before the broadcaster stops
    if (this.batch.length > 0) await this.flushBatch()
    this.unwatchJoins?.()
    this.unwatchJoins = undefined
    this.controller.abort()
    // a write during the flush above may have opened another interval
    clearTimeout(this.batchTimer)
    this.batchTimer = undefined
    this.batch = []
    this.queue.close()
    this.handed.clear()
    this.arriving.length = 0
    this.arrivingBytes = 0
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

  /**
   * Announces a new local head. With `broadcastBatchDelay` it waits in a
   * batch for that long; with `announceInterval`, it goes out at once after
   * a quiet spell and otherwise waits for the open interval to end. A head
   * waiting in a batch replaces the heads it links to there, taking them
   * (and what they had replaced) as the nodes its announcement carries
   * below it.
   */
  async announce (head: Head, replaced: Head[]): Promise<void> {
    if (this.init.broadcaster == null || this.signal.aborted) return
    const delay = this.init.broadcastBatchDelay
    const interval = this.init.announceInterval
    if (delay <= 0 && interval <= 0) {
      await this.send([{ cid: head.cid, dagName: head.dagName }])
      return
    }
    const gathered: GatheredHead = { cid: head.cid, dagName: head.dagName, below: [] }
    this.batch = this.batch.filter(h => {
      if (!replaced.some(r => r.cid.equals(h.cid))) return true
      gathered.below.push(h.cid, ...h.below)
      return false
    })
    if (gathered.below.length > MAX_CARRIED_BELOW) gathered.below.length = MAX_CARRIED_BELOW
    this.batch.push(gathered)
    if (this.batchTimer != null) return
    if (delay > 0) {
      this.batchTimer = setTimeout(() => {
        this.batchTimer = undefined
        this.track(this.flushBatch())
      }, delay)
      return
    }
    // a quiet spell ended: this write goes out now, and the interval gathers the next ones
    this.openInterval(interval)
    await this.flushBatch()
  }

  /** Opens an announce interval: when it ends, what was gathered meanwhile goes out and another opens; nothing was, and it stays closed */
  private openInterval (interval: number): void {
    this.batchTimer = setTimeout(() => {
      this.batchTimer = undefined
      if (this.batch.length === 0 || this.signal.aborted) return
      this.openInterval(interval)
      this.track(this.flushBatch())
    }, interval)
  }

  /** Announces every current head once (e.g. after passing a snapshot, to say so) */
  async announceHeads (): Promise<void> {
    if (this.init.broadcaster == null || this.signal.aborted) return
    await this.send(this.engine.heads.all().map(h => ({ cid: h.cid, dagName: h.dagName })), false)
  }

  /**
   * Walks, in the background, nodes the caller has reserved (heads a local
   * write linked to before anyone had processed them)
   */
  walkInBackground (cids: CID[]): void {
    if (cids.length === 0) return
    const signal = this.signal
    this.track(this.walker.walk(cids.map(cid => ({ cid })), { signal, onProgress: this.init.progress?.onProgress }).catch(async () => {
      if (!signal.aborted) await this.engine.markDirty().catch(() => {})
    }))
  }

  /** Handles a payload handed over directly: stores the blocks it carries, then handles it */
  async receive (data: Uint8Array): Promise<void> {
    const decoded = this.decode({ data })
    if (decoded == null || !(await this.admitted(data))) return
    await this.storeCarriedBlocks(decoded.blocks)
    await this.handleBroadcast(data, '', decoded.heads)
    this.init.progress?.settled(this.init.progress)
  }

  /**
   * A payload's heads and carried blocks: as the transport decoded them,
   * or decoded here (once); undefined, logged, when it is malformed
   */
  private decode (payload: ReceivedPayload): DecodedBroadcast | undefined {
    if (payload.heads != null) return { heads: payload.heads, blocks: payload.blocks ?? [] }
    try {
      return decodeBroadcastPayload(payload.data)
    } catch (err: any) {
      this.log.error('skipping broadcast - %e', err)
      return undefined
    }
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
    this.heard(from)
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

  /**
   * Notes that `from` announced something, when the broadcaster does not
   * tell of replicas that join (see `joined()`). An announcer heard for the
   * first time, or again after a silence (a partition that healed, a
   * replica that restarted), may hold branches given up while it was out of
   * reach: those it was not asked for are tried again at the next repair
   * tick. With join notifications, silence tells nothing more: a replica
   * whose heads others announced first stays silent for as long as the
   * cluster is quiet, and every one of its announcements would look like a
   * return (in a cluster of ten, that kept reviving junk branches faster
   * than they were given up).
   */
  private heard (from: string): void {
    if (from === '' || this.unwatchJoins != null) return
    const now = Date.now()
    const last = this.lastHeard.get(from)
    if ((last == null || now - last > RETURN_GAP_INTERVALS * this.init.rebroadcastInterval) && this.returners.size < MAX_ANNOUNCERS) this.returners.add(from)
    this.lastHeard.delete(from)
    this.lastHeard.set(from, now)
    if (this.lastHeard.size > MAX_ANNOUNCERS) this.lastHeard.delete(this.lastHeard.keys().next().value as string)
  }

  /**
   * A replica joined the topic (it connected: a restart, a healed
   * partition). It may hold branches given up while it was out of reach:
   * when there are any it was not asked for (not among the peers recorded
   * as lacking the block), they are tried again at the next repair tick,
   * and the store is marked dirty at once, so it does not look settled
   * before (see `scheduleRepair()`). Junk that every replica said it lacks
   * is not tried again each time one of them reconnects. Announcers alone
   * cannot tell this: a replica that restarts within a few rebroadcast
   * intervals, or whose heads others announce first, never looks silent.
   */
  private joined (peer: string): void {
    this.greet()
    // without repair ticks nothing would revive them: given-up branches then come back only through repair() callers
    if (this.signal.aborted || this.init.repairInterval <= 0) return
    this.log('%s joined the topic', peer)
    this.track((async () => {
      if ((await this.engine.givenUp({ signal: this.signal })).some(b => !b.reason.startsWith(MALFORMED_REASON) && notRefusedByAll(b, [peer]))) {
        if (this.joins.size < MAX_ANNOUNCERS) this.joins.add(peer)
        await this.engine.markDirty({ signal: this.signal })
      }
    })())
  }

  /**
   * Announces our heads soon after a replica joins the topic, so a fresh
   * or returning replica starts syncing at once instead of waiting up to a
   * rebroadcast interval. The heads carry their blocks (within
   * `broadcastBlocksMaxSize`; rebroadcasts carry none), leaving out heads
   * another replica announced meanwhile; nothing when there are none; at
   * most one announcement per quarter rebroadcast interval.
   */
  private greet (): void {
    if (this.greeting != null || this.signal.aborted || this.engine.heads.all().length === 0) return
    const heard = new Set<string>()
    this.greeting = heard
    const wait = Math.max(GREETING_DELAY + Math.random() * GREETING_JITTER, this.lastGreeting + this.init.rebroadcastInterval / 4 - Date.now())
    this.schedule(wait, async () => {
      this.greeting = undefined
      this.lastGreeting = Date.now()
      const heads = this.engine.heads.all().filter(h => !heard.has(cidKey(h.cid)))
      // with their blocks: the newcomer merges them without a fetch (ten heads fetched at once made it fall back to bitswap)
      await this.send(heads.map(h => ({ cid: h.cid, dagName: h.dagName })))
    })
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
  async repair (options?: SyncOptions): Promise<void> {
    this.repairing ??= this.runRepair(options).finally(() => { this.repairing = undefined })
    return this.repairing
  }

  private async runRepair (options?: SyncOptions): Promise<void> {
    const signal = options?.signal == null ? this.signal : AbortSignal.any([options.signal, this.signal])
    const pending = await this.engine.pendingByAttempts({ signal })
    const starts = pending.filter(cid => this.engine.reserve(cid)).map(cid => ({ cid }))
    this.log('repairing from %d unfinished branches', starts.length)
    try {
      // a repair comes again: a branch nobody connected has fails at once rather than holding a slot
      await this.walker.walk(starts, { signal, probe: true, onProgress: options?.onProgress ?? this.init.progress?.onProgress })
    } catch (err) {
      if (!signal.aborted) await this.engine.markDirty()
      throw err
    }
    // a revival that is due keeps the store dirty until it has been tried
    if ((await this.engine.pendingBranches({ signal })).length === 0 && !(this.joins.size > 0 && this.init.repairInterval > 0)) {
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
    const carried = this.takeHanded(cid)
    if (!this.engine.reserve(cid)) return 'skipped'
    let walking = false
    try {
      if (await this.engine.isProcessed(cid, { signal })) return 'skipped'
      // The head is fetched before it is recorded as the root of a walk, as
      // go-ds-crdt does: a head whose block never arrives (junk, or a writer
      // out of reach) leaves nothing behind. If the block exists, its writer
      // rebroadcasts it or a later node links to it.
      const preferPeer = announcer === '' ? undefined : announcer
      const node = carried != null
        ? await this.engine.verifiedNode(cid, carried)
        : await this.engine.fetchNode(cid, this.init.blockstore, { signal, timeout: this.init.headTimeout, preferPeer, onProgress: this.init.progress?.onProgress })
      if (this.init.isCovered != null && await this.init.isCovered(node, { signal })) return 'skipped'
      // links given: a head whose links are all merged gets no `w/` entry unless its run fails (see Engine.addRoot)
      if (!(await this.engine.addRoot(cid, { signal, links: node.links }))) return 'skipped'
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
        await this.walker.walk([{ cid, node }], { signal, preferPeer, onProgress: this.init.progress?.onProgress })
      })
      return 'ok'
    } catch (err: any) {
      if (signal.aborted) return 'skipped'
      if (isMalformed(err)) {
        this.log.error('skipping malformed head %c - %e', cid, err)
        await this.engine.giveUp(cid, `${MALFORMED_REASON} (${String(err.name)})`).catch(() => {})
        return 'failed'
      }
      this.log.error('could not sync head %c - %e', cid, err)
      // a walk that failed before its first run: the head's `w/` entry left out by addRoot() is written now
      if (walking) await this.engine.recordRoot(cid)
      // a walk that linked to this head while we held it left it to us
      if (walking || await this.engine.isPending(cid).catch(() => false)) {
        await this.engine.markDirty().catch(() => {})
      }
      return walking ? 'ok' : 'failed'
    } finally {
      this.engine.forgetRoot(cid)
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
    const key = cidKey(cid)
    this.seen.add(key)
    if (this.greeting != null && this.greeting.size < MAX_SEEN) this.greeting.add(key)
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
        payload = await nextPayloadOf(broadcaster, { signal })
      } catch (err: any) {
        if (signal.aborted) return
        this.log.error('broadcaster failed to deliver - %e', err)
        await delay(NEXT_RETRY_DELAY, { signal }).catch(() => {})
        continue
      }
      this.received++
      const decoded = this.decode(payload)
      if (decoded == null || !(await this.admitted(payload.data))) {
        this.handled++
        this.notifyProgress()
        continue
      }
      try {
        // admitted payloads only: in trusted mode a snapshot announced by a non-writer is never installed
        await this.init.onPayload?.(payload.data, payload.from ?? '', { signal })
      } catch (err: any) {
        if (signal.aborted) return
        this.log.error('could not look at a payload\'s snapshot announcement - %e', err)
      }
      this.arriving.push({ data: payload.data, from: payload.from ?? '', heads: decoded.heads, blocks: decoded.blocks })
      this.arrivingBytes += payload.data.byteLength
      if (this.storing == null) {
        this.storing = this.storeArrivals()
        this.track(this.storing)
      }
      // bounded: a reader far ahead of the disk waits, and the Broadcaster's own bounds apply
      if (this.arriving.length >= MAX_ARRIVING || this.arrivingBytes >= MAX_ARRIVING_BYTES) await this.storing
    }
  }

  /**
   * Stores the carried blocks of the payloads read so far, all of them in
   * one write, then queues their heads, in the order they arrived (carried
   * blocks land before the heads are queued, so their walks find them
   * stored). Payloads read while a write is under way wait for the next
   * one, so a replica behind its writers writes many blocks at once rather
   * than one per payload.
   */
  private async storeArrivals (): Promise<void> {
    const signal = this.signal
    try {
      while (this.arriving.length > 0 && !signal.aborted) {
        const group = this.takeArrivals()
        try {
          await this.storeCarriedBlocks(group.flatMap(arrival => arrival.blocks))
        } catch (err: any) {
          // the heads are still queued: their blocks are fetched instead
          if (!signal.aborted) this.log.error('could not store the blocks of %d broadcasts - %e', group.length, err)
        }
        for (const { data, from, heads } of group) {
          this.handleBroadcast(data, from, heads).catch((err: any) => {
            if (!signal.aborted) this.log.error('could not handle broadcast - %e', err)
          }).finally(() => {
            // every head of the payload had its turn: walked and merged, or given up
            this.handled++
            this.notifyProgress()
            this.init.progress?.settled(this.init.progress)
          })
        }
      }
    } finally {
      // no await between the loop's last check and this: a payload read meanwhile starts the next run
      this.storing = undefined
    }
  }

  /**
   * Announces heads, in as many broadcasts as other replicas' limits need;
   * with `carry` (first announcements and greetings, not rebroadcasts) a
   * payload that fits alone carries the heads' blocks too, and the blocks
   * below them, within `broadcastBlocksMaxSize` and the room the size limit
   * leaves
   */
  private async send (heads: Array<BroadcastHead & { below?: CID[] }>, carry = true): Promise<void> {
    if (heads.length === 0 || this.init.broadcaster == null) return
    let payloads = splitBroadcast(heads, this.init.gate?.overhead ?? 0)
    if (carry && payloads.length === 1) payloads = [await this.withBlocks(heads, payloads[0])]
    for (const unsealed of payloads) {
      try {
        // the snapshot announcement goes in first, so the trusted-mode seal covers the final payload
        const payload = await this.sealed(this.init.decorate?.(unsealed) ?? unsealed)
        if (payload == null) return
        await this.init.broadcaster.broadcast(payload, { signal: this.signal })
      } catch (err: any) {
        // not fatal: heads are rebroadcast every rebroadcastInterval
        this.log('broadcast failed, heads will be rebroadcast - %e', err)
        return
      }
    }
  }

  /**
   * `plain` (the heads alone, in one payload) with the heads' blocks and the
   * blocks below them, within `broadcastBlocksMaxSize` and the room the size
   * limit leaves; `plain` itself when nothing fits or the blocks cannot be read
   */
  private async withBlocks (heads: Array<BroadcastHead & { below?: CID[] }>, plain: Uint8Array): Promise<Uint8Array> {
    // the largest payload that still takes its decoration and the gate's seal within the limit
    const room = MAX_BROADCAST_SIZE - DECORATION_ROOM - (this.init.gate?.overhead ?? 0)
    const maxBlocks = Math.min(this.init.broadcastBlocksMaxSize ?? 0, room - plain.byteLength)
    if (maxBlocks <= 0) return plain
    try {
      const blocks = await this.headBlocks(heads)
      let carrying = encodeCarrying(heads, blocks, maxBlocks)
      // each carried block adds a tag and a length: past the room, as many bytes fewer of them are carried
      const over = carrying.payload.byteLength - room
      if (over > 0) carrying = encodeCarrying(heads, blocks, carrying.carried - over)
      return carrying.payload.byteLength <= room ? carrying.payload : plain
    } catch (err: any) {
      this.log('could not carry head blocks, announcing heads only - %e', err)
      return plain
    }
  }

  /** The payload as the gate lets it out (signed in trusted mode); undefined when this replica may not announce */
  private async sealed (payload: Uint8Array): Promise<Uint8Array | undefined> {
    return this.init.gate == null ? payload : this.init.gate.seal(payload, { signal: this.signal })
  }

  /** Whether the gate admits a received payload (trusted mode: signed by a current writer) */
  private async admitted (payload: Uint8Array): Promise<boolean> {
    return this.init.gate == null || this.init.gate.admit(payload, { signal: this.signal })
  }

  /**
   * The blocks of heads to carry in a broadcast, each with the blocks of
   * the nodes below it that it is to carry: those stored locally, while
   * they fit the cap (below a head, up to the first missing one)
   */
  private async headBlocks (heads: Array<BroadcastHead & { below?: CID[] }>): Promise<CarriedBlock[]> {
    const max = this.init.broadcastBlocksMaxSize ?? 0
    const out: CarriedBlock[] = []
    let size = 0
    for (const { cid, below } of heads) {
      const bytes = size < max ? await this.storedBlock(cid) : undefined
      if (bytes == null || size + bytes.byteLength > max) continue
      size += bytes.byteLength
      const carried: CarriedBlock = { cid, bytes }
      out.push(carried)
      if (below == null || below.length === 0) continue
      carried.below = []
      for (const link of below) {
        const linked = size < max ? await this.storedBlock(link) : undefined
        if (linked == null || size + linked.byteLength > max) break
        size += linked.byteLength
        carried.below.push(linked)
      }
    }
    return out
  }

  /** The block of `cid` when it is stored here */
  private async storedBlock (cid: CID): Promise<Uint8Array | undefined> {
    if (!(await this.init.blockstore.has(cid))) return undefined
    return toBuffer(this.init.blockstore.get(cid, { signal: this.signal }))
  }

  /** The oldest arrivals, within `MAX_ARRIVING` payloads and `MAX_ARRIVING_BYTES` (at least one) */
  private takeArrivals (): Arrival[] {
    let count = 0
    let bytes = 0
    while (count < this.arriving.length && count < MAX_ARRIVING) {
      const size = this.arriving[count].data.byteLength
      if (count > 0 && bytes + size > MAX_ARRIVING_BYTES) break
      bytes += size
      count++
    }
    this.arrivingBytes -= bytes
    return this.arriving.splice(0, count)
  }

  /**
   * Stores the verified blocks broadcasts carry (their heads', and the
   * blocks below those heads), so their heads merge without a fetch; blocks
   * that fail their hash, and blocks below a head that hash to none of its
   * links, are logged and dropped (they are then fetched as usual)
   */
  private async storeCarriedBlocks (carried: CarriedBlock[]): Promise<void> {
    if (carried.length === 0) return
    // a head carried twice in one group (a rebroadcast beside the announcement) is checked and stored once
    const unique = new Map<string, CarriedBlock>()
    for (const block of carried) unique.set(cidKey(block.cid), block)
    const { blocks, rejected } = await verifyCarriedBlocks([...unique.values()], { skip: async cid => this.init.blockstore.has(cid) })
    if (rejected > 0) this.log.error('dropped %d carried blocks that do not match their hash, or are below a head but none of its links', rejected)
    if (blocks.length === 0) return
    // heads' blocks are kept for their turns; blocks below them are read back by the walk like any stored block
    const hand = (cid: CID, bytes: Uint8Array): void => { if (unique.has(cidKey(cid))) this.hand(cid, bytes) }
    if (this.init.blockstore.putMany != null && blocks.length > 1) {
      try {
        // the CIDs it yields say each block is stored: all must be before the heads are queued
        for await (const cid of this.init.blockstore.putMany(blocks, { signal: this.signal })) void cid
        for (const { cid, bytes } of blocks) hand(cid, bytes)
        return
      } catch (err: any) {
        if (this.signal.aborted) return
        this.log.error('could not store %d carried blocks at once, storing them one by one - %e', blocks.length, err)
      }
    }
    for (const { cid, bytes } of blocks) {
      try {
        await this.init.blockstore.put(cid, bytes, { signal: this.signal })
        hand(cid, bytes)
      } catch (err: any) {
        if (!this.signal.aborted) this.log.error('could not store carried block %c - %e', cid, err)
      }
    }
  }

  /** Keeps a verified, stored carried block for its head's turn, the oldest dropped past the bounds */
  private hand (cid: CID, bytes: Uint8Array): void {
    if (bytes.byteLength > MAX_HANDED_BYTES) return
    const key = cidKey(cid)
    this.handed.take(key)
    while (!this.handed.fits(bytes.byteLength)) {
      const oldest = this.handed.oldest()
      if (oldest == null) break
      this.handed.take(oldest[0])
    }
    this.handed.set(key, { bytes })
  }

  /** Takes the carried block kept for a head, if any */
  private takeHanded (cid: CID): Uint8Array | undefined {
    return this.handed.take(cidKey(cid))?.bytes
  }

  private async flushBatch (): Promise<void> {
    const heads = this.batch
    this.batch = []
    await this.send(heads)
  }

  private scheduleRebroadcast (): void {
    this.schedule(jitter(this.init.rebroadcastInterval), async () => {
      const heads = this.engine.heads.all().filter(h => !this.seen.has(cidKey(h.cid)))
      this.seen.clear()
      await this.send(heads.map(h => ({ cid: h.cid, dagName: h.dagName })), false)
      this.scheduleRebroadcast()
    })
  }

  private scheduleRepair (): void {
    if (this.init.repairInterval <= 0) return
    this.schedule(this.init.repairInterval, async () => {
      // now and then, and soon after an announcer (re)appears, branches given up are tried once more
      const tick = ++this.repairTicks
      const returned = this.returners.size > 0 && tick - this.lastRevivalTick >= REVIVE_MIN_TICKS
      const periodic = tick % GIVEN_UP_RETRY_EVERY === 0
      if (periodic || returned) {
        const back = returned ? [...this.returners] : []
        if (returned) this.returners.clear()
        this.joins.clear()
        this.lastRevivalTick = tick
        // an announcer that returned may hold what it was not asked for (a branch every one of them said
        // it lacks stays given up: junk is not revived each time a replica restarts); the periodic retry
        // backs off per branch
        await this.revive(b => (returned && notRefusedByAll(b, back)) || (periodic && this.retryDue(b.cid, tick, GIVEN_UP_RETRY_EVERY)), 'retrying branches given up earlier')
      } else if (tick % REVIVE_MIN_TICKS === 0 && await this.revive(b => (b.refusedBy?.length ?? 0) === 0 && this.retryDue(b.cid, tick, REVIVE_MIN_TICKS), 'retrying branches given up for lack of an answer')) {
        // given up with no peer on record as lacking the block (they only stayed silent: a holder too busy
        // to answer in time): tried again every few ticks, as cheaply as any probe
      } else if (this.joins.size > 0) {
        // replicas that joined since: only what none of them was asked for (at most once a tick, however many join)
        const joined = [...this.joins]
        this.joins.clear()
        await this.revive(b => notRefusedByAll(b, joined), `retrying branches given up before ${joined.length} replica(s) joined`)
      }
      if (await this.engine.isDirty()) {
        await this.repair().catch(() => {})
      }
      this.scheduleRepair()
    })
  }

  /** Revives the given-up branches `only` picks; when there were any, says `why` and marks the store dirty. True when it revived some */
  private async revive (only: (branch: GivenUpBranch) => boolean, why: string): Promise<boolean> {
    if (await this.engine.reviveGivenUp({ signal: this.signal, only }) === 0) return false
    this.log(why)
    await this.engine.markDirty()
    return true
  }

  /** Whether a periodic retry may revive `cid` at `tick` (recording it when so): after `base` ticks, then twice as long each time */
  private retryDue (cid: CID, tick: number, base: number): boolean {
    const key = cidKey(cid)
    const last = this.retries.get(key)
    if (last != null && tick < last.due) return false
    const count = (last?.count ?? 0) + 1
    if (this.retries.size >= MAX_SEEN) this.retries.clear()
    this.retries.set(key, { count, due: tick + base * 2 ** Math.min(count, MAX_RETRY_DOUBLINGS) })
    return true
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
