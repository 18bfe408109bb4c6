/**
 * The engine: turns local writes into DAG nodes and merges DAG nodes (local
 * or fetched) into the OR-set, the heads and the walk bookkeeping in atomic
 * datastore batches: one per local write, and one per run of fetched nodes
 * (`processRun()`: a node, then the children below it whose blocks are
 * already at hand, up to `maxMergeNodes` nodes / `maxMergeBytes` bytes).
 *
 * Bookkeeping of unfinished walks (our fix for go-ds-crdt #279/#350):
 * a node's unprocessed children are recorded under `w/<block key>` in the
 * same batch that merges the node and marks it processed, and that record is
 * removed in the batch that processes the child. The `w/` entries are
 * therefore always exactly the frontier of every interrupted walk, whatever
 * failed or crashed, and `repair()` resumes from them. A run merges its
 * nodes parents first into one WriteSet, which reads through its own
 * pending writes, so the batch it commits is exactly what committing its
 * nodes one at a time would have left: a crash between two runs leaves the
 * frontier of the last one committed, and nothing of a run is half applied. A `w/` entry is
 * flagged ROOT when it was written for a broadcast head that nothing links
 * to yet (it becomes a head once processed) and COVERED when a processed
 * node links to it (it must not become a head). A broadcast head whose
 * links are all processed gets no ROOT entry unless its merge fails (see
 * `addRoot()`): its merge is one batch, which the entry would only cover.
 *
 * Once a node's atomic commit starts, the caller's signal no longer affects
 * it (see WriteSet.commit): a merge is either fully applied, on disk and in
 * the heads cache, with its events and (for local writes) its announcement
 * following, or nothing changed.
 *
 * Priorities (issue #20 item 2): an honest node has priority 1 + the
 * greatest priority among its links (1 without links), capped at
 * MAX_PRIORITY; go-ds-crdt writes exactly that (its heads of a DAG name are
 * the node's links, each recorded at its own priority). A remote node that
 * claims more is refused as malformed. The bound is computed from the
 * priorities its links *claim in their blocks*, never from what this
 * replica merged so far, so whether a node is accepted is a pure function
 * of its block and its links' blocks: every replica decides the same,
 * whatever order nodes arrive in (top-down walks, sync streams in
 * descending height, single broadcasts, repairs). A link's claim is read
 * from its processed marker `b/<block key>` (which stores the priority of
 * the block) or else from its block, at hand locally or fetched: a remote
 * node is merged only once the blocks it needs are read (`LinksNeeded`
 * tells the walker which to fetch; they are the next level of the walk, so
 * the walker hands them on decoded). While it waits its `w/` record stays,
 * so a crash or a link nobody has leaves it on the frontier for repair,
 * and it is given up with its link after `maxFetchAttempts`.
 *
 * Only the links needed are read: one link whose claim allows the node's
 * decides (the predicate is the same whatever else is known), so an honest
 * node whose greatest link arrived is merged even if another link never
 * does. A node that claims at most 1 needs none.
 *
 * Consequences, by design: a node claiming less than allowed is accepted
 * (it only loses ties for its own elements; go writes no such node, old
 * nodes without Data claim 0). A link whose block is malformed, and the
 * links refused at decode (`refusedLinks`: no replica can read them), have
 * unknowable claims, so they bound nothing (with refused links the check
 * is skipped): a hostile node can still claim MAX_PRIORITY that way, which
 * only decides ties. An over-claiming node is refused, but a node linking it that
 * claims its claim + 1 is accepted everywhere: deterministic, and it only
 * decides ties; local writes saturate at MAX_PRIORITY, so writing on top of
 * any accepted node stays possible.
 */

import { Key } from 'interface-datastore'
import { sha256 } from 'multiformats/hashes/sha2'
import PQueue from 'p-queue'
import * as varint from 'uint8-varint'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { cidKey } from '../codec/cid-key.js'
import { decodeNode, encodeNode } from '../codec/dag-node.js'
import { MAX_PRIORITY } from '../codec/delta.js'
import { Heads } from '../crdt/heads.js'
import { decodePriority, encodePriority, ORSet } from '../crdt/or-set.js'
import { storeHas, WriteSet } from '../crdt/write-set.js'
import { BlockFetchError, BlockTooLargeError, isMalformed, MalformedBlockError, MalformedDeltaError } from '../errors.js'
import { withTimeout } from '../utils.js'
import { splitDelta } from './batch.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { Delta } from '../codec/delta.js'
import type { Head } from '../crdt/heads.js'
import type { Layout } from '../crdt/layout.js'
import type { SetChange } from '../crdt/or-set.js'
import type { StoreKey } from '../crdt/write-set.js'
import type { DAGBlockstore } from '../interfaces.js'
import type { Logger } from '@libp2p/interface'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'
import type { ProgressOptions } from 'progress-events'

const EMPTY = new Uint8Array(0)
const ROOT = Uint8Array.of(1)
/** How the reason of a branch given up for a malformed block starts */
export const MALFORMED_REASON = 'malformed block'
const COVERED = Uint8Array.of(0)
/** Prefix (under the namespace) of the branches given up after `maxFetchAttempts` failed fetches or a malformed block */
const GIVEN_UP = '/g'
/** Last field of a `g/` record: its `w/` record was COVERED, or ROOT (older records lack it) */
const GIVEN_UP_COVERED = 'c'
const GIVEN_UP_ROOT = 'r'

/** Peers remembered per branch given up, at most */
const MAX_REFUSERS = 16

/** A branch given up (see `Engine.giveUp()`) */
export interface GivenUpBranch {
  cid: CID
  reason: string
  /** The peers asked last that did not have its block (absent: not known) */
  refusedBy?: string[]
  /**
   * Whether a processed node links to it (its `w/` record was COVERED when
   * it was given up), so it is no head once merged; absent: not recorded
   */
  covered?: boolean
}

/**
 * A `g/` record: the reason, then (after a NUL) the peers that said they
 * lack the block, then (after a NUL) whether a processed node links to it
 * (an install settling it must know, see install.ts)
 */
function encodeGivenUp (reason: string, refusers: string[], covered: boolean): Uint8Array {
  return new TextEncoder().encode(reason.slice(0, 200).replaceAll('\0', ' ') + '\0' + refusers.join(',') + '\0' + (covered ? GIVEN_UP_COVERED : GIVEN_UP_ROOT))
}

/** A `g/` record read back; records written before the last field have no `covered` */
function decodeGivenUp (cid: CID, value: Uint8Array): GivenUpBranch {
  const [reason, refusers, covered] = new TextDecoder().decode(value).split('\0')
  const branch: GivenUpBranch = refusers == null || refusers === '' ? { cid, reason } : { cid, reason, refusedBy: refusers.split(',') }
  if (covered === GIVEN_UP_COVERED || covered === GIVEN_UP_ROOT) branch.covered = covered === GIVEN_UP_COVERED
  return branch
}

/** Options of `processRun()` */
export interface RunOptions extends AbortOptions, ProgressOptions {
  /**
   * Where the run finds the blocks of children without the network;
   * without it only the given node is merged (and its links' priorities
   * are looked up in the engine's blockstore, if stored there)
   */
  local?: Pick<DAGBlockstore, 'has' | 'get' | 'getLocal'>
  /** Links of the given node read already (fetched after a `LinksNeeded`), by `cidKey()` */
  links?: Map<string, LinkBlock>
}

/**
 * A link's block as far as the priority check needs it: the priority it
 * claims (MAX_PRIORITY for a malformed block, whose claim is unknowable: it
 * bounds nothing), and the decoded node when it is kept to be handed on to
 * the walk
 */
export interface LinkBlock {
  priority: number
  node?: DecodedNode
}

/**
 * A remote node cannot be merged yet: its priority is checked against the
 * priorities its links claim, and these links' blocks are neither
 * processed nor at hand. The walker fetches them and tries again.
 */
export class LinksNeeded extends Error {
  static override name = 'LinksNeeded'
  override name = 'LinksNeeded'
  constructor (readonly cid: CID, readonly links: CID[]) {
    super(`Node ${cid} waits for the blocks of ${links.length} link(s) to check its priority`)
  }
}

/** Nodes merged in one datastore batch by `processRun()` at most */
export const DEFAULT_MAX_MERGE_NODES = 64
/** Block bytes merged in one datastore batch by `processRun()` at most (the node that starts a run always is) */
export const DEFAULT_MAX_MERGE_BYTES = 4 * 1024 * 1024

/** Options of a block fetch */
export interface FetchOptions extends AbortOptions, ProgressOptions {
  /** Time (ms) to wait for the block instead of `dagSyncerTimeout`; 0 = forever */
  timeout?: number
  /** A peer (id string) likely to have the block, asked first by DAG syncers that can */
  preferPeer?: string
  /**
   * Give up as soon as every connected peer said it does not have the block
   * (DAG syncers that can tell): repairs, which come again, use it so that
   * links nobody has cost a round trip rather than a whole deadline
   */
  probe?: boolean
}

/** Something that can fetch blocks: a blockstore or a session of one */
export type BlockGetter = Pick<DAGBlockstore, 'get'>

/** What happened when a node was processed */
export interface ProcessResult {
  /** Children this caller must fetch and process next */
  children: CID[]
  /** Visible-value changes the node caused */
  changes: SetChange[]
}

/** What happened when a run of nodes was processed */
export interface RunResult extends ProcessResult {
  /** Nodes merged by the run, the given one included */
  merged: number
  /** Those nodes, in the order they were merged */
  nodes: DecodedNode[]
  /** Decoded blocks of some of `children`, read by the run already (by `cidKey()`): hand them on rather than read them again */
  known: Map<string, DecodedNode>
}

/** A node of a run (not its first) refused as malformed: the run is redone without it */
class RunNodeRefused extends Error {
  constructor (readonly cid: CID, readonly error: Error) {
    super(error.message)
  }
}

/** A committed local write */
export interface LocalCommit {
  head: Head
  /** The heads the new node replaced (its links) */
  replaced: Head[]
  changes: SetChange[]
  /**
   * Linked heads that were never processed (adopted heads whose walk is not
   * running): reserved for the caller, who must walk them
   */
  unprocessed: CID[]
  /**
   * Set when a write that had to be split into several nodes failed after
   * its first node(s) committed: `head` is the last node that did
   */
  failure?: Error
}

export interface EngineInit {
  datastore: Datastore
  blockstore: DAGBlockstore
  layout: Layout
  log: Logger
  dagSyncerTimeout: number
  /** The largest delta a local node may carry; larger writes become several nodes (default: no limit) */
  maxDeltaSize?: number
  /** Fetched blocks larger than this (bytes) are refused */
  maxBlockSize: number
  /** Fetch failures after which an unfinished branch is given up (its `w/` record moved to `g/`) */
  maxFetchAttempts: number
  /**
   * Nodes merged in one datastore batch at most
   *
   * @default 64
   */
  maxMergeNodes?: number
  /**
   * Block bytes merged in one datastore batch at most
   *
   * @default 4_194_304
   */
  maxMergeBytes?: number
  /** Called after every committed node with the value changes it caused */
  onChanges(changes: SetChange[], node?: { cid: CID, priority: number, dagName: string, local: boolean }): void
  /**
   * Whether a node not processed here is merged already through an
   * installed snapshot (src/snapshot/cover.ts); such a node is marked
   * processed without merging it again, walking its links or becoming a
   * head (its links may be compacted on every peer). `'head'`: it is a
   * covered head of a snapshot being installed, which the install would
   * make a head: it becomes one unless a processed node links to it.
   */
  mergedBySnapshot?(tx: WriteSet, node: DecodedNode, options?: AbortOptions): Promise<boolean | 'head'>
}

/** The decoded blocks of `cids` among those read */
function decodedOf (cids: CID[], seen: Map<string, { node: DecodedNode }>): Map<string, DecodedNode> {
  const out = new Map<string, DecodedNode>()
  for (const cid of cids) {
    const key = cidKey(cid)
    const found = seen.get(key)
    if (found != null) out.set(key, found.node)
  }
  return out
}

export class Engine {
  public readonly set: ORSet
  public readonly heads: Heads
  public readonly layout: Layout
  private readonly datastore: Datastore
  private readonly blockstore: DAGBlockstore
  private readonly log: Logger
  private readonly dagSyncerTimeout: number
  private readonly maxDeltaSize: number
  private readonly maxBlockSize: number
  private readonly maxFetchAttempts: number
  private readonly maxMergeNodes: number
  private readonly maxMergeBytes: number
  private readonly onChanges: EngineInit['onChanges']
  /** Serialises every read-modify-write of the set, heads and walk records */
  private readonly lock = new PQueue({ concurrency: 1 })
  /** Nodes queued or being processed by some walk, by `cidKey()` */
  private readonly reserved = new Set<string>()
  /** Broadcast heads `addRoot()` wrote no `w/` entry for, until their run settles (by `cidKey()`) */
  private readonly unrecorded = new Set<string>()
  /** Branches given up since start (see `giveUp()`) */
  public gaveUp = 0
  private readonly mergedBySnapshot?: EngineInit['mergedBySnapshot']

  constructor (init: EngineInit) {
    this.datastore = init.datastore
    this.blockstore = init.blockstore
    this.layout = init.layout
    this.log = init.log
    this.dagSyncerTimeout = init.dagSyncerTimeout
    this.maxDeltaSize = init.maxDeltaSize ?? Number.POSITIVE_INFINITY
    this.maxBlockSize = init.maxBlockSize
    this.maxFetchAttempts = init.maxFetchAttempts
    this.maxMergeNodes = Math.max(1, init.maxMergeNodes ?? DEFAULT_MAX_MERGE_NODES)
    this.maxMergeBytes = init.maxMergeBytes ?? DEFAULT_MAX_MERGE_BYTES
    this.onChanges = init.onChanges
    this.mergedBySnapshot = init.mergedBySnapshot
    this.set = new ORSet(init.datastore, init.layout)
    this.heads = new Heads(init.datastore, init.layout)
  }

  /** Work waiting for the merge lock */
  get queued (): number {
    return this.lock.size + this.lock.pending
  }

  /** Claims a node for one walk; false when another walk has it */
  reserve (cid: CID): boolean {
    const key = cidKey(cid)
    if (this.reserved.has(key)) return false
    this.reserved.add(key)
    return true
  }

  release (cid: CID): void {
    this.reserved.delete(cidKey(cid))
  }

  async isProcessed (cid: CID, options?: AbortOptions): Promise<boolean> {
    return storeHas(this.datastore, this.layout.processedId(blockKey(cid)), options)
  }

  /** Whether `cid` is on the frontier of an unfinished walk (has a `w/` record) */
  async isPending (cid: CID, options?: AbortOptions): Promise<boolean> {
    return storeHas(this.datastore, this.layout.pendingId(blockKey(cid)), options)
  }

  async isDirty (options?: AbortOptions): Promise<boolean> {
    return this.datastore.has(this.layout.dirtyKey, options)
  }

  async markDirty (options?: AbortOptions): Promise<void> {
    await this.datastore.put(this.layout.dirtyKey, EMPTY, options)
  }

  async markClean (options?: AbortOptions): Promise<void> {
    await this.datastore.delete(this.layout.dirtyKey, options)
  }

  /** Whether any node is recorded as the frontier of an unfinished walk (one key read at most) */
  async hasPending (options?: AbortOptions): Promise<boolean> {
    for await (const _ of this.datastore.queryKeys({ prefix: this.layout.pendingPrefix + '/', limit: 1 }, options)) return true // eslint-disable-line no-unreachable-loop
    return false
  }

  /** Block keys of every node recorded as the frontier of an unfinished walk */
  async pendingBranches (options?: AbortOptions): Promise<CID[]> {
    const out: CID[] = []
    const prefix = this.layout.pendingPrefix
    for await (const key of this.datastore.queryKeys({ prefix: prefix + '/' }, options)) {
      try {
        out.push(cidFromBlockKey(key.toString().slice(prefix.length)))
      } catch (err: any) {
        // Stryker disable next-line StringLiteral: log text only
        this.log.error('dropping unreadable pending branch %s - %e', key, err)
        await this.datastore.delete(key, options)
      }
    }
    return out
  }

  /** Forgets the `w/` record of a node that can never be processed (a malformed block) */
  async dropPending (cid: CID, options?: AbortOptions): Promise<void> {
    await this.lock.add(async () => {
      await this.datastore.delete(this.layout.pendingKey(blockKey(cid)), options)
    })
  }

  /**
   * Gives up an unfinished branch for good: its `w/` record becomes a `g/`
   * record (value: the reason), so repairs stop paying for it and the store
   * can be clean. A node that links to it later, or a broadcast of it,
   * records it again. Does nothing when it has no `w/` record.
   */
  async giveUp (cid: CID, reason: string, options?: AbortOptions & { refusedBy?: string[] }): Promise<void> {
    await this.lock.add(async () => {
      const id = blockKey(cid)
      const pending = this.layout.pendingKey(id)
      const mark = await this.readRecord(pending, options)
      if (mark == null) return
      const batch = this.datastore.batch()
      batch.delete(pending)
      const refusers = (options?.refusedBy ?? []).slice(0, MAX_REFUSERS)
      batch.put(this.givenUpKey(id), encodeGivenUp(reason, refusers, mark[0] !== ROOT[0]))
      await batch.commit(options)
      this.gaveUp++
    })
  }

  /**
   * Counts a failed fetch against an unfinished branch (in its `w/` record)
   * and gives the branch up once it failed `maxFetchAttempts` times. A
   * fetch that was never really asked (`asked: false`: the deadline it
   * shared with its siblings ran out while it waited for a slot) counts too,
   * but never gives a branch up: only a fetch that was asked does.
   * `refusedBy`: the peers the last fetch asked that did not have the block,
   * recorded with the branch when it is given up (see `givenUp()`). Returns
   * true when it was given up.
   */
  async recordFetchFailure (cid: CID, options?: AbortOptions & { asked?: boolean, refusedBy?: string[] }): Promise<boolean> {
    const id = blockKey(cid)
    const pending = this.layout.pendingKey(id)
    const asked = options?.asked ?? true
    const attempts = await this.lock.add(async () => {
      const mark = await this.readRecord(pending, options)
      if (mark == null) return 0
      // byte 0: ROOT or COVERED, byte 1: failed fetches so far, byte 2: of those, fetches really asked
      let failed = Math.min(255, (mark[1] ?? 0) + 1)
      if (!asked) failed = Math.min(failed, Math.max(0, this.maxFetchAttempts - 1))
      const tried = Math.min(255, (mark[2] ?? 0) + (asked ? 1 : 0))
      if (failed < this.maxFetchAttempts) {
        await this.datastore.put(pending, Uint8Array.of(mark[0] ?? COVERED[0], failed, tried), options)
      }
      return failed
    }) as number
    if (attempts < this.maxFetchAttempts) return false
    await this.giveUp(cid, `no block after ${attempts} fetches`, options)
    return true
  }

  /**
   * The unfinished branches, those asked for least often first, then those
   * with the fewest failed fetches: a repair asks for branches not tried yet
   * before those that keep failing, so an honest branch is not left behind
   * many junk ones
   */
  async pendingByAttempts (options?: AbortOptions): Promise<CID[]> {
    const out: Array<{ cid: CID, failed: number, tried: number, at: number }> = []
    const prefix = this.layout.pendingPrefix
    for await (const { key, value } of this.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<{ key: { toString(): string }, value: Uint8Array }>) {
      try {
        out.push({ cid: cidFromBlockKey(key.toString().slice(prefix.length)), failed: value[1] ?? 0, tried: value[2] ?? 0, at: out.length })
      } catch {
        // unreadable: pendingBranches() drops it
      }
    }
    return out.sort((a, b) => a.tried - b.tried || a.failed - b.failed || a.at - b.at).map(b => b.cid)
  }

  /**
   * Puts branches given up for lack of their block back on the frontier
   * (`w/`, one fetch attempt left), so a repair tries each once more: a branch given up while its
   * holders were out of reach (a long partition) is not lost for good. Each comes back ROOT or
   * COVERED as its `g/` record says (COVERED when it does not say, or when a node merged since
   * links to it), so a broadcast head nothing links to is a head once merged.
   * Returns how many were revived.
   */
  async reviveGivenUp (options?: AbortOptions & { only?(branch: GivenUpBranch): boolean }): Promise<number> {
    // a malformed block stays malformed: only branches whose block did not arrive come back
    const branches = (await this.givenUp(options)).filter(b => !b.reason.startsWith(MALFORMED_REASON) && options?.only?.(b) !== false)
    if (branches.length === 0) return 0
    await this.lock.add(async () => {
      const batch = this.datastore.batch()
      for (const { cid, covered } of branches) {
        const id = blockKey(cid)
        batch.delete(this.givenUpKey(id))
        // ROOT again only when it was a ROOT given up and no node merged since links to it (that
        // one recorded it COVERED): a broadcast head nothing links to becomes a head once merged
        const flag = (await this.readRecord(this.layout.pendingKey(id), options))?.[0] ?? (covered === false ? ROOT[0] : COVERED[0])
        batch.put(this.layout.pendingKey(id), Uint8Array.of(flag, Math.max(0, this.maxFetchAttempts - 1)))
      }
      await batch.commit(options)
    })
    return branches.length
  }

  /** Block keys of every branch given up, with the reason and, when known, the peers that said they lack it */
  async givenUp (options?: AbortOptions): Promise<GivenUpBranch[]> {
    const out: GivenUpBranch[] = []
    const stale: string[] = []
    const prefix = this.layout.namespace + GIVEN_UP
    for await (const { key, value } of this.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<{ key: { toString(): string }, value: Uint8Array }>) {
      let cid: CID
      try {
        cid = cidFromBlockKey(key.toString().slice(prefix.length))
      } catch {
        continue
      }
      // merged since (it arrived after all): no longer given up
      if (await this.isProcessed(cid, options)) {
        stale.push(key.toString())
        continue
      }
      out.push(decodeGivenUp(cid, value))
    }
    for (const key of stale) await this.datastore.delete(new Key(key, false), options)
    return out
  }

  /** Whether the `g/` record of `cid` says a processed node links to it */
  private async givenUpCovered (cid: CID, id: string, options?: AbortOptions): Promise<boolean> {
    // almost every received head has no `g/` record: answer that in-process when the store allows
    if (!(await storeHas(this.datastore, this.givenUpKey(id), options))) return false
    const value = await this.readRecord(this.givenUpKey(id), options)
    return value != null && decodeGivenUp(cid, value).covered === true
  }

  /** One record of the datastore; undefined when absent */
  private async readRecord (key: Key, options?: AbortOptions): Promise<Uint8Array | undefined> {
    try {
      return await this.datastore.get(key, options)
    } catch (err: any) {
      if (err.name === 'NotFoundError') return undefined
      throw err
    }
  }

  private givenUpKey (id: string): Key {
    return new Key(`${this.layout.namespace}${GIVEN_UP}${id}`, false)
  }

  /**
   * Fetches and decodes a node through `getter` (the blockstore or a session
   * of it), bounded by `options.timeout` (default `dagSyncerTimeout`). The
   * bytes are checked against the CID's sha2-256 digest and their size
   * against `maxBlockSize`; a refused block is handed to the blockstore's
   * `discard()`, so a DAG syncer that stored it on the way removes it.
   */
  async fetchNode (cid: CID, getter: BlockGetter, options?: FetchOptions): Promise<DecodedNode> {
    return this.checkNode(cid, await this.fetchBytes(cid, getter, options))
  }

  private async fetchBytes (cid: CID, getter: BlockGetter, options?: FetchOptions): Promise<Uint8Array> {
    let chunks: Uint8Array[]
    const timeout = options?.timeout ?? this.dagSyncerTimeout
    try {
      chunks = await withTimeout(options?.signal, timeout, async signal => {
        const out: Uint8Array[] = []
        let size = 0
        // onProgress goes into the DAG syncer's get, so its own events (bitswap's) reach the caller
        const opts = { signal, onProgress: options?.onProgress, ...(options?.preferPeer == null ? {} : { preferPeer: options.preferPeer }), ...(options?.probe === true ? { probe: true } : {}) }
        for await (const chunk of getter.get(cid, opts)) {
          size += chunk.byteLength
          if (size > this.maxBlockSize) throw new BlockTooLargeError(`Block is larger than ${this.maxBlockSize} bytes`)
          out.push(chunk)
        }
        return out
      })
    } catch (err: any) {
      options?.signal?.throwIfAborted()
      if (err.name === 'BlockTooLargeError') {
        await this.discard(cid)
        throw new MalformedBlockError(`Block ${cid} is larger than ${this.maxBlockSize} bytes`, { cause: err })
      }
      throw new BlockFetchError(`Could not fetch block ${cid}: ${err.message}`, { cause: err })
    }
    return chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
  }

  /**
   * Decodes a block the caller has checked against its CID already (a
   * block carried in a broadcast: verified before it was stored), with the
   * size check of `fetchNode()`; a block that does not decode is discarded
   * and rejects as there. Saves the read back from the blockstore and the
   * second hash of a block just received.
   */
  async verifiedNode (cid: CID, bytes: Uint8Array): Promise<DecodedNode> {
    if (bytes.byteLength > this.maxBlockSize) {
      await this.discard(cid)
      throw new MalformedBlockError(`Block ${cid} is larger than ${this.maxBlockSize} bytes`)
    }
    return this.checkNode(cid, bytes, true)
  }

  /** Checks a block against its CID's digest (unless `verified`) and decodes it; a refused block is discarded */
  private async checkNode (cid: CID, bytes: Uint8Array, verified = false): Promise<DecodedNode> {
    if (!verified && cid.multihash.code === sha256.code) {
      const digest = await sha256.digest(bytes)
      if (!uint8ArrayEquals(digest.bytes, cid.multihash.bytes)) {
        await this.discard(cid)
        // corrupted in transit: another fetch may succeed, so this is a fetch error
        throw new BlockFetchError(`Block ${cid} does not match its hash`)
      }
    }
    try {
      return decodeNode(cid, bytes)
    } catch (err) {
      await this.discard(cid)
      throw err
    }
  }

  /**
   * A node whose block is at hand without the network, with its size;
   * undefined when it is not, or is not usable as it is (too large, not
   * decoding: left to a fetch, which reports it as usual)
   */
  private async localNode (cid: CID, store: NonNullable<RunOptions['local']>, options?: AbortOptions): Promise<{ node: DecodedNode, size: number } | undefined> {
    try {
      if (store.getLocal != null) {
        const found = await store.getLocal(cid, options)
        if (found == null || found.bytes.byteLength > this.maxBlockSize) return undefined
        return { node: found.node ?? await this.checkNode(cid, found.bytes), size: found.bytes.byteLength }
      }
      if (!(await store.has(cid, options))) return undefined
      const bytes = await this.fetchBytes(cid, store, options)
      return { node: await this.checkNode(cid, bytes), size: bytes.byteLength }
    } catch (err: any) {
      options?.signal?.throwIfAborted()
      // Stryker disable next-line StringLiteral: log text only
      this.log('block of %c at hand but not merged in a run - %e', cid, err)
      return undefined
    }
  }

  private async discard (cid: CID): Promise<void> {
    try {
      // Stryker disable next-line OptionalChaining: a blockstore without discard() then throws a TypeError, which the catch below logs like any failed discard
      await this.blockstore.discard?.(cid)
    } catch (err: any) {
      // Stryker disable next-line StringLiteral: log text only
      this.log.error('could not discard refused block %c - %e', cid, err)
    }
  }

  /**
   * Writes a local delta as a new node on top of the current heads of its
   * DAG, stores the block and merges it, all before returning. `build` runs
   * under the merge lock so tombstones see a stable set; it returns
   * undefined when there is nothing to write.
   *
   * A delta larger than `maxDeltaSize` (a delete of a key with many live
   * elements adds one tombstone each) is written as several nodes, each on
   * top of the previous one, each its own atomic commit; only the last is
   * returned for announcement, as it links the others.
   */
  async commitLocal (build: (tx: WriteSet) => Promise<Delta | undefined>, options?: AbortOptions): Promise<LocalCommit | undefined> {
    return this.lock.add(async () => {
      options?.signal?.throwIfAborted()
      let tx = new WriteSet(this.datastore)
      const delta = await build(tx)
      if (delta == null || (delta.elements.length === 0 && delta.tombstones.length === 0)) {
        return undefined
      }
      const replaced = this.heads.list(delta.dagName)
      let result: LocalCommit | undefined
      for (const [i, part] of splitDelta(delta, this.maxDeltaSize).entries()) {
        if (i > 0) tx = new WriteSet(this.datastore)
        try {
          const links = this.heads.list(part.dagName)
          part.priority = Math.min(links.reduce((max, h) => Math.max(max, h.height), 0) + 1, MAX_PRIORITY)
          const node = await encodeNode(part, links.map(h => h.cid))
          // the block is stored while the merge reads; it lands before the merge commits
          const stored = Promise.resolve(this.blockstore.put(node.cid, node.bytes, options))
          stored.catch(() => {})
          const { changes, children } = await this.apply(tx, { cid: node.cid, delta: part, links: links.map(h => h.cid) }, true, options, stored)
          const head = { cid: node.cid, height: part.priority, dagName: part.dagName }
          if (result == null) {
            result = { head, replaced, changes, unprocessed: children }
          } else {
            result.head = head
            result.changes.push(...changes)
            result.unprocessed.push(...children)
          }
        } catch (err: any) {
          if (result == null) throw err
          result.failure = err
          break
        }
      }
      return result
    }) as Promise<LocalCommit | undefined>
  }

  /**
   * Records a broadcast head as the root of a walk: a ROOT `w/` entry unless
   * it is already processed or already on some walk's frontier (COVERED
   * when it is a branch given up below a processed node). Returns false
   * when there is nothing to walk.
   *
   * With `links` (the head's, from its block): when every link is processed
   * and the head has no `g/` record, no `w/` entry is written. Its merge
   * then needs nothing fetched and is one atomic batch, so the entry would
   * only cover the few milliseconds until that batch; a kill in them loses
   * the announcement, as a kill just before this call always did, never
   * a merged node or a marker (the writer rebroadcasts its heads, and a
   * later node links this one). The head is kept in memory instead until
   * its run settles: if the run fails in any way (refused, waiting for
   * links, the batch failing) the ROOT entry is written then, so repairs,
   * `giveUp()` and fetch counting see it exactly as before. On a single-put
   * stream this saves one awaited LevelDB write per received put.
   */
  async addRoot (cid: CID, options?: AbortOptions & { links?: CID[] }): Promise<boolean> {
    return this.lock.add(async () => {
      const id = blockKey(cid)
      // read in-process when the store allows: this runs once per received head
      if (await storeHas(this.datastore, this.layout.processedId(id), options)) return false
      if (!(await storeHas(this.datastore, this.layout.pendingId(id), options))) {
        if (options?.links != null && await this.linksProcessed(options.links, options) && !(await storeHas(this.datastore, this.givenUpKey(id), options))) {
          this.unrecorded.add(cidKey(cid))
          return true
        }
        // a branch given up below a processed node stays COVERED (no head once merged)
        await this.datastore.put(this.layout.pendingKey(id), await this.givenUpCovered(cid, id, options) ? COVERED : ROOT, options)
      }
      return true
    }) as Promise<boolean>
  }

  /**
   * Writes the ROOT `w/` entry that `addRoot()` left out for `cid`, if its
   * run has not settled it: the walk failed before merging it. Best effort
   * (logged): the store may be failing already.
   */
  async recordRoot (cid: CID, options?: AbortOptions): Promise<void> {
    if (!this.unrecorded.has(cidKey(cid))) return
    await this.lock.add(async () => { await this.writeUnrecorded(cid, options) })
  }

  /** Forgets an unrecorded root whose walk ended (merged, recorded, or stopped) */
  forgetRoot (cid: CID): void {
    this.unrecorded.delete(cidKey(cid))
  }

  /** Under the lock: the ROOT `w/` entry of an unrecorded root, once */
  private async writeUnrecorded (cid: CID, options?: AbortOptions): Promise<void> {
    const key = cidKey(cid)
    if (!this.unrecorded.has(key)) return
    this.unrecorded.delete(key)
    const id = blockKey(cid)
    try {
      if (await storeHas(this.datastore, this.layout.processedId(id), options) || await storeHas(this.datastore, this.layout.pendingId(id), options)) return
      await this.datastore.put(this.layout.pendingKey(id), ROOT, options)
    } catch (err: any) {
      // Stryker disable next-line StringLiteral: log text only
      this.log.error('could not record the walk of head %c - %e', cid, err)
    }
  }

  /** Whether every one of `links` is processed (read in-process when the store allows) */
  private async linksProcessed (links: CID[], options?: AbortOptions): Promise<boolean> {
    for (const link of links) {
      if (!(await this.isProcessed(link, options))) return false
    }
    return true
  }

  /**
   * Makes `node` a head of its DAG without processing it (adoption by a
   * fresh replica). With `alongside`, also when the DAG has heads by now (the
   * other heads of the broadcast that found it empty).
   */
  async adoptHead (node: DecodedNode, options?: AbortOptions & { alongside?: boolean }): Promise<void> {
    await this.lock.add(async () => {
      if (options?.alongside !== true && this.heads.count(node.delta.dagName) > 0) return
      if (this.heads.get(node.delta.dagName, node.cid) != null) return
      // a node below one merged since it was heard (processed, or on a walk's
      // frontier as COVERED) is no head: adopting it late would leave an
      // ancestor of a head among the heads for good
      const id = blockKey(node.cid)
      if (await this.datastore.has(this.layout.processedKey(id), options)) return
      const mark = await this.readRecord(this.layout.pendingKey(id), options)
      if (mark != null && mark[0] === COVERED[0]) return
      const tx = new WriteSet(this.datastore)
      this.heads.add(tx, { cid: node.cid, height: node.delta.priority, dagName: node.delta.dagName })
      await tx.commit(options)
    })
  }

  /**
   * Merges a fetched node. Returns the children the caller reserved and must
   * walk next.
   */
  async processNode (node: DecodedNode, options?: AbortOptions): Promise<ProcessResult> {
    return this.processRun(node, options)
  }

  /**
   * Merges a fetched node and, in the same datastore batch, the nodes below
   * it whose blocks `options.local` has at hand (depth first, parents
   * before children, up to `maxMergeNodes` nodes and `maxMergeBytes` bytes
   * of blocks). Returns the children the caller reserved and must walk
   * next: those the run did not reach. A node of the run refused as
   * malformed is left out (the run is redone without it) and handed back
   * as a child, so the walk meets it alone and gives it up as usual; one
   * whose priority its links at hand cannot decide is handed back too
   * (decoded, in `known`). The given node itself rejects with `LinksNeeded`
   * then, having changed nothing: the caller fetches those links and passes
   * them in `options.links`.
   */
  async processRun (node: DecodedNode, options?: RunOptions): Promise<RunResult> {
    return this.lock.add(async () => {
      const excluded = new Set<string>()
      for (;;) {
        try {
          const result = await this.applyRun(node, excluded, options)
          this.unrecorded.delete(cidKey(node.cid))
          return result
        } catch (err: any) {
          if (err instanceof RunNodeRefused) {
            this.log('node %c of a run refused, merging the run without it - %e', err.cid, err.error)
            excluded.add(cidKey(err.cid))
            continue
          }
          // a head addRoot() did not record: recorded now, so what follows (giving up, counting, repair) finds it
          await this.writeUnrecorded(node.cid)
          if (isMalformed(err) && this.heads.get(node.delta.dagName, node.cid) != null) {
            // a head adopted before it was merged (adoptHead) that the merge refused is no head
            const undo = new WriteSet(this.datastore)
            this.heads.remove(undo, node.delta.dagName, node.cid)
            await undo.commit()
          }
          throw err
        }
      }
    }) as Promise<RunResult>
  }

  private async applyRun (first: DecodedNode, excluded: Set<string>, options?: RunOptions): Promise<RunResult> {
    const tx = new WriteSet(this.datastore)
    // `skipped`: processed already (only the first can be), no event
    const merged: Array<{ node: DecodedNode, changes: SetChange[], skipped: boolean }> = []
    // reserved by this run: handed back, or merged (released after the commit)
    const children: CID[] = []
    const stack: CID[] = []
    let bytes = 0
    // taken off the stack and being staged
    let current: CID | undefined
    const { seen, claimed } = this.linkReader(options)
    const stage = async (node: DecodedNode): Promise<void> => {
      const result = await this.stage(tx, node, false, options, undefined, claimed)
      merged.push({ node, changes: result.changes, skipped: result.skipped === true })
      // popped in link order
      for (let i = result.children.length - 1; i >= 0; i--) stack.push(result.children[i])
    }
    try {
      await stage(first)
      while (stack.length > 0) {
        const cid = stack.pop() as CID
        current = cid
        const local = options?.local
        // unlike cid.toString(), cidKey() is not cached on the CID: one key per node
        const key = cidKey(cid)
        const found = local == null || merged.length >= this.maxMergeNodes || bytes >= this.maxMergeBytes || excluded.has(key)
          ? undefined
          : seen.get(key) ?? await this.localNode(cid, local, options)
        if (found == null) {
          children.push(cid)
          current = undefined
          continue
        }
        seen.set(key, found)
        try {
          await stage(found.node)
        } catch (err: any) {
          if (err instanceof LinksNeeded) {
            // its links' blocks are not at hand: the walk fetches them (nothing of it was staged)
            children.push(cid)
            current = undefined
            continue
          }
          if (isMalformed(err)) throw new RunNodeRefused(cid, err)
          throw err
        }
        bytes += found.size
        current = undefined
      }
      await tx.commit(options)
    } catch (err) {
      for (const cid of [...children, ...stack]) this.release(cid)
      if (current != null) this.release(current)
      for (const { node } of merged.slice(1)) this.release(node.cid)
      throw err
    }
    // merged and marked processed: no walk needs them reserved any more
    for (const { node } of merged.slice(1)) this.release(node.cid)
    const changes: SetChange[] = []
    for (const { node, changes: nodeChanges, skipped } of merged) {
      if (skipped) continue
      changes.push(...nodeChanges)
      this.onChanges(nodeChanges, { cid: node.cid, priority: node.delta.priority, dagName: node.delta.dagName, local: false })
    }
    const nodes = merged.filter(m => !m.skipped).map(m => m.node)
    return { children, changes, merged: nodes.length, nodes, known: decodedOf(children, seen) }
  }

  /**
   * What a run knows of the blocks it reads (links looked up for the
   * priority check, or given by the caller), so each is read once, and how
   * it reads a link's claimed priority: given, read already, or at hand
   * locally (`options.local`, else the engine's blockstore); undefined when
   * it is none of these
   */
  private linkReader (options?: RunOptions): { seen: Map<string, { node: DecodedNode, size: number }>, claimed(cid: CID): Promise<number | undefined> } {
    const seen = new Map<string, { node: DecodedNode, size: number }>()
    const given = new Map<string, number>()
    for (const [key, link] of options?.links ?? []) {
      if (link.node != null) seen.set(key, { node: link.node, size: link.node.size ?? 0 })
      else given.set(key, link.priority)
    }
    const store = options?.local ?? this.blockstore
    const claimed = async (cid: CID): Promise<number | undefined> => {
      const key = cidKey(cid)
      const known = given.get(key)
      if (known != null) return known
      let found = seen.get(key)
      if (found == null) {
        found = await this.localNode(cid, store, options)
        if (found != null) seen.set(key, found)
      }
      return found?.node.delta.priority
    }
    return { seen, claimed }
  }

  /** Runs `fn` under the merge lock */
  async exclusive <T> (fn: () => Promise<T>): Promise<T> {
    return this.lock.add(fn) as Promise<T>
  }

  /** Reports value changes made outside node processing (a purge) */
  announceChanges (changes: SetChange[]): void {
    this.onChanges(changes)
  }

  /** Waits for everything queued on the merge lock */
  async idle (): Promise<void> {
    await this.lock.onIdle()
  }

  /**
   * Refuses a remote node that claims a higher priority than its links allow
   * (1 + the greatest priority they claim, 1 without links, at most
   * MAX_PRIORITY). A link's claim comes from its processed marker, else
   * from `claimed` (its block, when at hand); throws `LinksNeeded` with the
   * links whose claims are missing when those could decide. Reads only:
   * nothing is staged before it passes. Skipped for a node with links
   * refused at decode, whose claims nobody can know.
   */
  private async checkPriority (tx: WriteSet, node: DecodedNode, linkKeys: StoreKey[], claimed: (cid: CID) => Promise<number | undefined>, options?: AbortOptions): Promise<void> {
    const priority = node.delta.priority
    if (priority <= 1 || (node.refusedLinks != null && node.refusedLinks > 0)) return
    await tx.prefetch(linkKeys, options)
    // the same predicate whatever is known: one link allowing it decides; `allowed` is only for the error
    let allowed = 1
    const unknown: number[] = []
    for (const [i, key] of linkKeys.entries()) {
      const marker = await tx.get(key, options)
      // processed by a release that stored no priority: read like an unprocessed link
      if (marker == null || marker.byteLength === 0) {
        unknown.push(i)
        continue
      }
      const bound = Math.min(decodePriority(marker) + 1, MAX_PRIORITY)
      if (priority <= bound) return
      allowed = Math.max(allowed, bound)
    }
    const missing: CID[] = []
    for (const i of unknown) {
      const claim = await claimed(node.links[i])
      if (claim == null) {
        missing.push(node.links[i])
        continue
      }
      const bound = Math.min(claim + 1, MAX_PRIORITY)
      if (priority <= bound) return
      allowed = Math.max(allowed, bound)
    }
    if (missing.length > 0) throw new LinksNeeded(node.cid, missing)
    throw new MalformedDeltaError(`Node ${node.cid} claims priority ${priority}; its links allow at most ${allowed}`)
  }

  /** Block keys of processed nodes recorded with links that were refused, and how many */
  async refusedLinks (options?: AbortOptions): Promise<Array<{ cid: CID, refused: number }>> {
    const out: Array<{ cid: CID, refused: number }> = []
    const prefix = this.layout.rejectedPrefix
    for await (const pair of this.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<Pair>) {
      try {
        out.push({ cid: cidFromBlockKey(pair.key.toString().slice(prefix.length)), refused: varint.decode(pair.value) })
      } catch (err: any) {
        // Stryker disable next-line StringLiteral: log text only
        this.log.error('unreadable refused-links record %s - %e', pair.key, err)
      }
    }
    return out
  }

  /**
   * Merges a node into the set, heads and walk records in one commit.
   * `before` (the local block being stored) must settle before the commit.
   */
  private async apply (tx: WriteSet, node: DecodedNode, local: boolean, options?: AbortOptions, before?: Promise<unknown>): Promise<ProcessResult> {
    const { changes, children, skipped } = await this.stage(tx, node, local, options, before)
    try {
      await tx.commit(options)
    } catch (err) {
      for (const child of children) this.release(child)
      throw err
    }
    if (skipped === true) return { children, changes }
    this.onChanges(changes, { cid: node.cid, priority: node.delta.priority, dagName: node.delta.dagName, local })
    return { children, changes }
  }

  /**
   * Marks a node processed without merging it or walking its links when an
   * installed snapshot merged it already (`init.mergedBySnapshot`): it is
   * below the snapshot's covered heads, and its effect and its ancestors'
   * are in the set; a head among its links is dropped (it lies below a
   * merged node). A covered head of a snapshot being installed is
   * settled as the install would settle it: a head unless a processed node
   * links to it (the install skips a covered head processed here). True
   * when it did.
   */
  private async settleMergedBySnapshot (tx: WriteSet, node: DecodedNode, options?: AbortOptions): Promise<boolean> {
    const merged = this.mergedBySnapshot == null ? false : await this.mergedBySnapshot(tx, node, options)
    if (merged === false) return false
    const id = blockKey(node.cid)
    const pendingKey = this.layout.pendingId(id)
    const mark = merged === 'head' ? await tx.get(pendingKey, options) : undefined
    tx.put(this.layout.processedId(id), encodePriority(node.delta.priority))
    tx.delete(pendingKey)
    const head = this.heads.get(node.delta.dagName, node.cid) != null
    if (merged === 'head') {
      if (!head && (mark == null || mark[0] !== COVERED[0])) this.heads.add(tx, { cid: node.cid, height: node.delta.priority, dagName: node.delta.dagName })
    } else if (head) {
      this.heads.remove(tx, node.delta.dagName, node.cid)
    }
    // its links are below a merged node: none is a head (as when a node is merged)
    for (const link of node.links) {
      if (this.heads.get(node.delta.dagName, link) != null) this.heads.remove(tx, node.delta.dagName, link)
    }
    return true
  }

  /**
   * Writes the merge of a node into `tx`, reading through it (so nodes
   * staged before in the same WriteSet count as merged). Children returned
   * are reserved; the caller commits, then releases them or hands them on.
   */
  private async stage (tx: WriteSet, node: DecodedNode, local: boolean, options?: AbortOptions, before?: Promise<unknown>, claimed?: (cid: CID) => Promise<number | undefined>): Promise<ProcessResult & { skipped?: boolean }> {
    const id = blockKey(node.cid)
    const { delta } = node
    const pendingKey = this.layout.pendingId(id)

    if (!local && await tx.has(this.layout.processedId(id), options)) {
      tx.delete(pendingKey)
      return { children: [], changes: [], skipped: true }
    }
    if (!local && await this.settleMergedBySnapshot(tx, node, options)) return { children: [], changes: [], skipped: true }

    const linkIds = node.links.map(blockKey)
    const linkKeys = linkIds.map(link => this.layout.processedId(link))
    // before anything is staged: a node refused, or waiting for its links, leaves `tx` as it was
    if (!local) await this.checkPriority(tx, node, linkKeys, claimed ?? (async () => undefined), options)
    // What is read below is read concurrently with the merge's own reads
    // (the merge writes none of it), then served from the WriteSet.
    const [changes] = await Promise.all([
      this.set.merge(tx, delta, id, local, options),
      tx.prefetch(linkKeys, local ? { ...options, existence: true } : options),
      local ? undefined : tx.prefetch([pendingKey], options),
      before
    ])
    tx.put(this.layout.processedId(id), encodePriority(delta.priority))
    if (node.refusedLinks != null && node.refusedLinks > 0) {
      // nothing can ever fetch those links: record the node rather than keep a walk open forever
      // Stryker disable next-line StringLiteral: log text only
      this.log.error('node %c has %d unusable links; merged what it carries and recorded it under %s', node.cid, node.refusedLinks, this.layout.rejectedPrefix)
      tx.put(this.layout.rejectedId(id), varint.encode(node.refusedLinks))
    }

    const mark = local ? undefined : await tx.get(pendingKey, options)
    const covered = mark != null && mark[0] === COVERED[0]
    if (!covered && this.heads.get(delta.dagName, node.cid) == null) {
      this.heads.add(tx, { cid: node.cid, height: delta.priority, dagName: delta.dagName })
    }
    if (mark != null) tx.delete(pendingKey)

    const children: CID[] = []
    for (const [i, link] of node.links.entries()) {
      if (this.heads.get(delta.dagName, link) != null) {
        this.heads.remove(tx, delta.dagName, link)
      }
      if (await tx.has(linkKeys[i], options)) continue
      tx.put(this.layout.pendingId(linkIds[i]), COVERED)
      if (this.reserve(link)) children.push(link)
    }
    return { children, changes }
  }
}
