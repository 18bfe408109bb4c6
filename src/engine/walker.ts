/**
 * The DAG walker: fetches the nodes below a head, merges each one through
 * the engine and descends into the children the engine hands back (those
 * not processed and not claimed by another walk). Each merge is a run
 * (`Engine.processRun`): the fetched node and, in the same datastore batch,
 * the nodes below it whose blocks are already local (a sync stream brought
 * them, or an earlier walk stored them), so a walk costs one batch per run,
 * not per node. Deeper nodes are taken
 * first within a walk, so its queue holds about one DAG level's width
 * rather than the whole DAG.
 *
 * Walks share `numWorkers` fetch-and-merge slots, handed out in arrival
 * order, and no walk holds more than `numWorkers - 1` of them while others
 * wait (all of them when alone), so a branch whose blocks never arrive
 * cannot starve the other walks. The children of one node share one fetch
 * deadline, as in go-ds-crdt: `dagSyncerTimeout` from when the first of them
 * is asked for, pushed back by each child that does arrive. A node linking many blocks
 * nobody has therefore costs about one `dagSyncerTimeout`, not one per link.
 *
 * A remote node is merged only once the priorities its links claim decide
 * its own (see engine.ts): when the engine answers `LinksNeeded`, the walk
 * fetches those links (the next level it walks anyway; they share one
 * deadline, each in its own slot), merges the node, then hands each link
 * on to its own merge: decoded (up to `MAX_HANDED_BYTES` of blocks per
 * node), with the error its fetch failed with, or as the fetch still under
 * way, so no block is asked for twice in a walk. The node is merged as soon
 * as one arrived link allows its claim (an honest node is not held up by a
 * junk link beside its real ones); one that stays undecided once all its
 * link fetches settled keeps its `w/` record and fails with the first
 * failed fetch of its links, counted against it. A malformed link
 * bounds nothing (its claim is unknowable) and is given up on its own.
 *
 * A failed fetch leaves its `w/` record in place (see engine.ts) and counts
 * against it; one the shared deadline ran out on before it was asked (it
 * waited for a slot behind siblings nobody has) counts too but cannot give
 * the branch up, and repairs ask branches asked least often first: an
 * honest branch queued behind junk links is not given up for junk's sake,
 * while the junk is given up after a few repairs. A branch that failed `maxFetchAttempts` times, or whose block
 * is malformed, is given up (recorded under `g/`). The walk goes on with its
 * other branches and rejects at the end with the first error, so the caller
 * can mark the store dirty and a repair can resume.
 */

import PQueue from 'p-queue'
import { cidKey } from '../codec/cid-key.js'
import { MAX_PRIORITY } from '../codec/delta.js'
import { BlockFetchError, isMalformed } from '../errors.js'
import { Slots } from '../utils.js'
import { LinksNeeded, MALFORMED_REASON } from './engine.js'
import type { BlockGetter, Engine, FetchOptions, LinkBlock, RunResult } from './engine.js'
import type { DAGBlockstore, SyncProgressEvents } from '../interfaces.js'
import type { SyncProgress } from './sync-meter.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'
import type { ProgressOptions } from 'progress-events'

/**
 * A sibling with less than this share of `dagSyncerTimeout` left of the
 * shared deadline is not asked for at all
 */
const MIN_SHARE = 0.1

/**
 * Bytes of fetched link blocks kept decoded per waiting node to be handed
 * on to their merges; past it only their priorities are kept (the blocks
 * are read again when walked)
 */
const MAX_HANDED_BYTES = 4 * 1024 * 1024

/** Fetch errors of siblings never asked for: they never give their branch up (see `recordFetchFailure`) */
const NOT_ASKED = new WeakSet<Error>()

/** What `pick` finds first in `err` or its causes (a few levels down), else undefined */
function inCauses <T> (err: Error, pick: (cause: Error) => T | undefined): T | undefined {
  let cause: unknown = err
  for (let depth = 0; cause != null && depth < 4; depth++) {
    const found = pick(cause as Error)
    if (found !== undefined) return found
    cause = (cause as Error).cause
  }
  return undefined
}

/** A fetch that had no peer to ask (a partition): like a sibling never asked, it never gives its branch up */
function nobodyAsked (err: Error): boolean {
  return inCauses(err, cause => cause.name === 'NoPeersAskedError' ? true : undefined) === true
}

/** The peers a DAG syncer names on a fetch error (or its causes) as asked without sending the block */
function refusers (err: Error): string[] | undefined {
  return inCauses(err, cause => {
    const named = (cause as { refusedBy?: unknown }).refusedBy
    return Array.isArray(named) ? named.filter((id): id is string => typeof id === 'string') : undefined
  })
}

/** A place to start walking: a reserved node, fetched already or not */
export interface WalkStart {
  cid: CID
  node?: DecodedNode
}

/** Options of a walk */
export interface WalkOptions extends AbortOptions, ProgressOptions<SyncProgressEvents> {
  /** A peer (id string) likely to hold the branch: asked first by DAG syncers that can */
  preferPeer?: string
  /** Fetches end once every connected peer said it lacks the block (see `FetchOptions.probe`) */
  probe?: boolean
}

export interface WalkerInit {
  engine: Engine
  blockstore: DAGBlockstore
  log: Logger
  numWorkers: number
  /** The deadline (ms) shared by the children of one node; 0 = none */
  dagSyncerTimeout: number
  /** Told of each node merged and each node done (sync progress) */
  progress?: SyncProgress
}

/** Siblings: nodes linked by one node, sharing one fetch deadline (set when the first of them is fetched) */
interface Siblings {
  deadline?: number
}

/**
 * A node fetched as a link of its parent already, or still being fetched:
 * not asked again in this walk, and a failure is counted once (thrown here)
 */
async function handedOn (cid: CID, fetched?: LinkFetch): Promise<DecodedNode | undefined> {
  if (fetched == null) return undefined
  const key = cidKey(cid)
  const node = fetched.links.get(key)?.node
  if (node != null) return node
  const failed = fetched.failures.get(key)
  if (failed != null) throw failed
  return fetched.pending.get(key)
}

/** What fetching the links of a waiting node brought, by `cidKey()` */
interface LinkFetch {
  links: Map<string, LinkBlock>
  failures: Map<string, Error>
  /** Fetches still under way once the node was decided */
  pending: Map<string, Promise<DecodedNode>>
}

/** The failure that fails a node whose links did not arrive: a fetch really asked before one that was not; never a malformed link's */
function firstFailure (failures: Map<string, Error>): Error | undefined {
  // Stryker disable next-line MethodExpression: equivalent, a malformed link claims MAX_PRIORITY, which allows any node, so no node that had one is still undecided here
  const fetches = [...failures.values()].filter(err => !isMalformed(err))
  return fetches.find(err => !NOT_ASKED.has(err)) ?? fetches[0]
}

export class Walker {
  private readonly engine: Engine
  private readonly blockstore: DAGBlockstore
  private readonly log: Logger
  private readonly numWorkers: number
  private readonly timeout: number
  private readonly progress?: SyncProgress
  private readonly slots: Slots
  private outstanding = 0
  private running = 0

  constructor (init: WalkerInit) {
    this.engine = init.engine
    this.blockstore = init.blockstore
    this.log = init.log
    this.numWorkers = init.numWorkers
    this.timeout = init.dagSyncerTimeout
    this.progress = init.progress
    this.slots = new Slots(init.numWorkers)
  }

  /** Fetches waiting for a worker or in flight, over every walk */
  get queued (): number {
    return this.outstanding
  }

  /** Walks under way */
  get walks (): number {
    return this.running
  }

  /**
   * Walks down from nodes the caller has reserved with `engine.reserve()`.
   * Every reservation taken on the way is released before this settles.
   */
  async walk (starts: WalkStart[], options?: WalkOptions): Promise<void> {
    if (starts.length === 0) return
    this.running++
    try {
      await this.run(starts, options)
    } finally {
      this.running--
    }
  }

  private async run (starts: WalkStart[], options?: WalkOptions): Promise<void> {
    // switched to the plain blockstore for the rest of the walk once the session fails
    const via = { getter: await this.getter(starts[0].cid, options) }
    const errors: Error[] = []
    // alone, a walk may use every slot; beside others, one fewer
    const queue = new PQueue({ concurrency: this.numWorkers })

    await new Promise<void>(resolve => {
      let outstanding = 0

      const schedule = (cid: CID, depth: number, known: DecodedNode | undefined, siblings: Siblings, fetched?: LinkFetch): void => {
        outstanding++
        this.outstanding++
        queue.add(async () => {
          known ??= await handedOn(cid, fetched)
          await this.slots.acquire(options)
          const slot = { held: true }
          try {
            options?.signal?.throwIfAborted()
            const node = known ?? await this.fetchSibling(cid, via, siblings, options)
            const { run, links } = await this.merge(node, via, slot, options)
            for (const merged of run.nodes) this.progress?.merged(merged, options)
            const group = this.siblings()
            for (const child of run.children) {
              schedule(child, depth + 1, run.known.get(cidKey(child)), group, links)
            }
          } finally {
            if (slot.held) this.slots.release()
          }
        }, { priority: depth })
          .catch(async (err: Error) => {
            if (isMalformed(err)) {
              // no retry can fix a malformed block: give it up, recorded
              // Stryker disable next-line StringLiteral: log text only
              this.log.error('giving up malformed node %c - %e', cid, err)
              await this.engine.giveUp(cid, `${MALFORMED_REASON} (${err.name})`).catch(() => {})
              return
            }
            if (options?.signal?.aborted !== true) {
              // Stryker disable next-line StringLiteral: log text only
              this.log.error('could not process node %c - %e', cid, err)
              if (err.name === 'BlockFetchError') {
                // Stryker disable next-line BlockStatement: the result handler only logs
                await this.engine.recordFetchFailure(cid, { asked: !NOT_ASKED.has(err) && !nobodyAsked(err), refusedBy: refusers(err) }).then(gaveUp => {
                  // Stryker disable next-line ConditionalExpression,StringLiteral: log only
                  if (gaveUp) this.log.error('gave up node %c after repeated failed fetches', cid)
                }, () => {})
              }
            }
            errors.push(err)
          })
          .finally(() => {
            this.engine.release(cid)
            outstanding--
            this.outstanding--
            if (outstanding === 0) resolve()
            this.progress?.settled(options)
          })
      }

      // A repair's starts are branches of their own: with probes, each fetch
      // is bounded already (every connected peer answers or is waited on a
      // short while), so each start has its own deadline and is really
      // asked, rather than most of them running out of a shared one
      const group = this.siblings()
      for (const start of starts) {
        schedule(start.cid, 0, start.node, options?.probe === true ? this.siblings() : group)
      }
      // beside other walks this one keeps a slot free for them
      const share = (): void => {
        queue.concurrency = this.running > 1 ? Math.max(1, this.numWorkers - 1) : this.numWorkers
      }
      share()
      queue.on('next', share)
    })

    if (errors.length > 0) {
      throw errors[0]
    }
  }

  /**
   * Merges a node and the nodes below it at hand (a run). When it waits for
   * links (`LinksNeeded`), gives up the slot it holds while it fetches them,
   * then tries again; still undecided, it fails with the first failed fetch
   * of the links it needed.
   */
  private async merge (node: DecodedNode, via: { getter: BlockGetter }, slot: { held: boolean }, options?: WalkOptions): Promise<{ run: RunResult, links?: LinkFetch }> {
    // the nodes below it already at hand are merged in the same batch
    const runOptions = { signal: options?.signal, onProgress: options?.onProgress, local: this.blockstore }
    let needed: CID[]
    try {
      return { run: await this.engine.processRun(node, runOptions) }
    } catch (err) {
      if (!(err instanceof LinksNeeded)) throw err
      needed = err.links
    }
    // its links' blocks decide whether it may be merged: fetch them, each in a slot of its own
    this.slots.release()
    slot.held = false
    const links = await this.fetchLinks(needed, node.delta.priority, via, options)
    await this.slots.acquire(options)
    slot.held = true
    try {
      return { run: await this.engine.processRun(node, { ...runOptions, links: links.links }), links }
    } catch (again) {
      if (again instanceof LinksNeeded) throw firstFailure(links.failures) ?? again
      throw again
    }
  }

  /**
   * Fetches the links a node waits for, sharing one deadline, each in a slot
   * of its own, until one of them allows the node's `priority` or all
   * settled: their claimed priorities, with the decoded nodes within
   * `MAX_HANDED_BYTES`; the errors of those that failed; the fetches still
   * under way (their children's merges wait for them rather than ask
   * again). A malformed link's claim is unknowable: it bounds nothing
   * (MAX_PRIORITY), as links refused at decode. Rejects only when aborted.
   */
  private async fetchLinks (cids: CID[], priority: number, via: { getter: BlockGetter }, options?: WalkOptions): Promise<LinkFetch> {
    const group = this.siblings()
    const out: LinkFetch = { links: new Map(), failures: new Map(), pending: new Map() }
    const state = { kept: 0, left: cids.length, wake: (): void => {} }
    const settled = (key: string, node?: DecodedNode, err?: Error): void => {
      if (node != null) {
        const size = node.size ?? 0
        const keep = state.kept + size <= MAX_HANDED_BYTES
        if (keep) state.kept += size
        out.links.set(key, keep ? { priority: node.delta.priority, node } : { priority: node.delta.priority })
      } else if (err != null) {
        out.failures.set(key, err)
        if (isMalformed(err)) out.links.set(key, { priority: MAX_PRIORITY })
      }
      out.pending.delete(key)
      state.left--
      state.wake()
    }
    cids.forEach(cid => {
      const key = cidKey(cid)
      const fetch = (async () => {
        await this.slots.acquire(options)
        try {
          return await this.fetchSibling(cid, via, group, options)
        } finally {
          this.slots.release()
        }
      })()
      out.pending.set(key, fetch)
      fetch.then(node => { settled(key, node) }, (err: Error) => { settled(key, undefined, err) })
    })
    const decided = (): boolean => [...out.links.values()].some(link => Math.min(link.priority + 1, MAX_PRIORITY) >= priority)
    while (state.left > 0 && !decided()) {
      await new Promise<void>(resolve => { state.wake = resolve })
    }
    options?.signal?.throwIfAborted()
    return out
  }

  private siblings (): Siblings {
    return { deadline: this.timeout > 0 ? undefined : Infinity }
  }

  /** Fetches one of a node's children within their shared deadline, which a child that arrives pushes back */
  private async fetchSibling (cid: CID, via: { getter: BlockGetter }, siblings: Siblings, options?: WalkOptions): Promise<DecodedNode> {
    let timeout = 0
    // the clock starts when the first sibling is asked for, not while they wait for a slot
    siblings.deadline ??= Date.now() + this.timeout
    if (siblings.deadline !== Infinity) {
      timeout = siblings.deadline - Date.now()
      if (timeout < this.timeout * MIN_SHARE) {
        // never really asked for: not counted against the branch (see NOT_ASKED)
        const err = new BlockFetchError(`Could not fetch block ${cid}: the ${this.timeout} ms its siblings share ran out before it was asked for`)
        NOT_ASKED.add(err)
        throw err
      }
    }
    const node = await this.fetch(cid, via, { ...options, timeout })
    // Stryker disable next-line ConditionalExpression: equivalent, Math.max(Infinity, x) is Infinity
    if (siblings.deadline !== Infinity) siblings.deadline = Math.max(siblings.deadline, Date.now() + this.timeout)
    return node
  }

  /**
   * Fetches through the walk's session, falling back to the plain blockstore
   * if the session fails. A session that failed once (its providers were
   * gone, or there were none when the walk started) is not used again in
   * that walk: every further fetch through it would wait `dagSyncerTimeout`
   * before falling back.
   */
  private async fetch (cid: CID, via: { getter: BlockGetter }, options: FetchOptions): Promise<DecodedNode> {
    const getter = via.getter
    try {
      return await this.engine.fetchNode(cid, getter, options)
    } catch (err: any) {
      // Stryker disable next-line OptionalChaining: equivalent, every caller passes an options object
      if (getter === this.blockstore || options?.signal?.aborted === true || err.name !== 'BlockFetchError') throw err
      // Stryker disable next-line StringLiteral: log text only
      this.log('session fetch of %c failed, fetching without the session from now on - %e', cid, err)
      via.getter = this.blockstore
      return this.engine.fetchNode(cid, this.blockstore, options)
    }
  }

  private async getter (root: CID, options?: AbortOptions): Promise<BlockGetter> {
    if (this.blockstore.createSession == null) {
      return this.blockstore
    }
    try {
      return this.blockstore.createSession(root, options)
    } catch (err: any) {
      // Stryker disable next-line StringLiteral: log text only
      this.log('no session for %c, fetching without one - %e', root, err)
      return this.blockstore
    }
  }
}
