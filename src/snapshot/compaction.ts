/**
 * Compaction (issue #16): make a snapshot of the current heads and, once
 * every known replica has passed it, delete what it covers: the blocks of
 * the DAG nodes below its covered heads, the element markers of tombstoned
 * elements, and the elements the snapshot removed (overwritten ones, kept
 * under `s/r` until then: removal.ts). Processed markers stay (as in
 * go-ds-crdt #369), so a covered node that arrives again is skipped;
 * tombstones stay, so a covered element that arrives again (from a replica
 * that never passed the snapshot) cannot come back.
 *
 * Membership: a *known replica* is an announcer heard on the topic within
 * `membershipWindow` (default one day), before or after a restart: each is
 * recorded under `z/m/<base64url peer id>` (last heard, whether it
 * announces snapshot support, the snapshot it announced; only while this
 * replica announces snapshots, so nothing is written with compaction off), rewritten when
 * that changes or a minute after the last write, loaded by `start()`
 * (records older than the window are deleted), and at most
 * `maxKnownReplicas` are kept (the least recently heard go first). A
 * replica *has passed* a snapshot when it announces it (Head field 101,
 * src/codec/broadcast-snapshot.ts). Every replica applies the removal of
 * every snapshot it passes (one it made, or one it heard of whose covered
 * heads it has all merged with no walk unfinished, and whose every block it
 * has fetched), and announces the newest one that covers the snapshot
 * compacted here and includes every removal it announced before
 * (removal.ts `notIncluding`): what a replica announces covers every block
 * it deleted, can be fetched from it, and carries the removals replicas
 * rely on, so a replica coming back always finds the blocks it lacks or an
 * announced snapshot covering them. A known replica whose broadcasts lack the field
 * (go-ds-crdt, or compaction not configured) blocks compaction; so does
 * one that has not passed the snapshot yet, and so do payloads whose sender
 * the broadcaster does not say (heard within the window: such replicas
 * cannot be told apart, so none can be seen to pass); the reason is logged
 * and shown in `stats().history.waiting`. A store with a broadcaster waits
 * `settle` ms after start (it must hear the topic first) before it deletes
 * anything.
 *
 * The blocks to delete: with no walk unfinished and no branch given up,
 * the processed nodes read under the merge lock before the snapshot is
 * made (all at or below its covered heads), less the heads and the nodes
 * compacted before (`z/d` records): one scan, no block read. Otherwise a
 * walk down from the covered heads over local blocks.
 *
 * Atomicity: one datastore batch deletes the set entries, records the
 * compacted snapshot (`z/k`), records the blocks to delete as deleted
 * (`z/d<key>`) and writes one job record (`z/j<snapshot>`); the blocks are
 * then deleted, then the job record. A crash in between leaves the job,
 * and `start()` finishes it (deleting the blocks of every `z/d` record):
 * after a reopen a compaction is either absent or complete.
 */

import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { fromString as uint8ArrayFromString } from 'uint8arrays/from-string'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { decodeNode } from '../codec/dag-node.js'
import { decodePriority } from '../crdt/or-set.js'
import { MALFORMED_REASON } from '../engine/engine.js'
import { blockDeleter, DELETE_BATCH } from './block-deleter.js'
import { coveredPrefix, inSnapshotRecords, settleNamedBySnapshot } from './cover.js'
import { makeSnapshot } from './create.js'
import { fetchVerified, readLocalBlock } from './fetch.js'
import { decodeRoot } from './format.js'
import { verifySnapshot } from './install.js'
import { applyRemoval, forgettable, isApplied, notIncluding, readCover } from './removal.js'
import type { BlockDeleter, DeletingBlockstore } from './block-deleter.js'
import type { MakeSnapshotOptions, SnapshotComponents } from './create.js'
import type { SnapshotHead, SnapshotNode, SnapshotRoot } from './format.js'
import type { SnapshotAnnouncement } from '../codec/broadcast-snapshot.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** Compaction policy (off unless given) */
export interface CompactionInit {
  /**
   * How often (ms) to try compacting; 0 compacts only when `compact()` is
   * called (the replica still announces snapshots, so others may compact)
   *
   * @default 3_600_000
   */
  interval?: number
  /**
   * Compact on the interval only when this replica keeps at least this many
   * DAG nodes' blocks
   *
   * @default 10_000
   */
  minNodes?: number
  /**
   * How long (ms) an announcer counts as a known replica after it was last
   * heard
   *
   * @default 86_400_000
   */
  membershipWindow?: number
  /**
   * Known replicas remembered at most (persisted across restarts); beyond
   * it the least recently heard is forgotten
   *
   * @default 1000
   */
  maxKnownReplicas?: number
}

export const DEFAULT_COMPACTION_INTERVAL = 3_600_000
export const DEFAULT_COMPACTION_MIN_NODES = 10_000
export const DEFAULT_MEMBERSHIP_WINDOW = 86_400_000

const EMPTY = new Uint8Array(0)
/** Value of a job record whose blocks are those of the `z/d` records (see `finishJob`) */
const JOB_ALL_DELETED = new Uint8Array([1])

/** Time (ms) to fetch one block of an announced snapshot */
const ROOT_TIMEOUT = 60_000
/** Announced snapshots remembered at most as not covering the one compacted here */
const MAX_NOT_COVERING = 64
/** Nodes walked at most to learn whether a snapshot covers the one compacted here */
const COVER_CHECK_BUDGET = 100_000

/** Blocks a compaction reads ahead of its walk */
const READ_AHEAD = 16
/** Processed nodes and heads read together (see `processedNow`) */
interface ProcessedNodes {
  ids: string[]
  heads: Set<string>
}

/**
 * The processed nodes (block keys) and the heads a snapshot collected
 * under the merge lock, when no branch is given up (a snapshot is never
 * made while a walk is unfinished): then every processed node is at or
 * below a head, so at or below the snapshot's covered heads. Undefined
 * when a branch is given up, even as malformed (the walk decides then).
 */
function processedNow ({ nodes, heads, givenUp }: { nodes: readonly SnapshotNode[], heads: readonly SnapshotHead[], givenUp: number }): ProcessedNodes | undefined {
  if (givenUp > 0) return undefined
  return { ids: nodes.map(n => n.id), heads: new Set(heads.map(h => blockKey(h.cid))) }
}

/** Time (ms) a snapshot block read by compaction may take to fetch */
const READ_TIMEOUT = 60_000
interface WalkNode {
  cid: CID
  height: number
  links: CID[]
}

/** What `compact()` did */
export interface CompactResult {
  /** The snapshot made of the current heads */
  snapshot: CID
  /** What was deleted (0 and 0 while waiting) */
  removed: { blocks: number, entries: number }
  /** Why nothing was deleted, when so */
  waiting?: string
}

/** History size, as in `stats().history` */
export interface HistoryStats {
  /** DAG nodes merged whose blocks this replica still keeps */
  nodes: number
  /** Bytes of those blocks, as of the last `compact()` or `historyStats()` */
  blocksBytes: number
  /** The newest snapshot this replica has passed (made, or heard of and merged up to) */
  snapshot?: CID
  /** The newest snapshot compacted here */
  compacted?: CID
  /** Why compaction is waiting, when it is */
  waiting?: string
}

interface Peer {
  lastSeen: number
  supported: boolean
  snapshot?: CID
  /** `lastSeen` as last written to the datastore */
  stored?: number
}

/** Known replicas kept at most (the least recently heard are forgotten first) */
export const DEFAULT_MAX_KNOWN_REPLICAS = 1_000

/**
 * The known-replica entry standing for payloads whose sender the
 * broadcaster does not say (a `Broadcaster` without `nextPayload`, or one
 * that leaves `from` out). No peer id is spelled so (base58 and base32 have
 * no '-'). Those replicas cannot be told apart, so none of them can be seen
 * to pass a snapshot: compaction waits while one was heard in the window.
 */
const UNNAMED = '-'

/** A known replica's record is rewritten when heard again this long (ms) after it was written */
const MEMBERSHIP_WRITE_INTERVAL = 60_000

/** `z/m/<peer>` value: lastSeen (float64 ms), supported (1 byte), then the snapshot CID's bytes or nothing */
function encodePeer (peer: Peer): Uint8Array {
  const cid = peer.snapshot?.bytes ?? new Uint8Array(0)
  const out = new Uint8Array(9 + cid.byteLength)
  const view = new DataView(out.buffer)
  view.setFloat64(0, peer.lastSeen)
  out[8] = peer.supported ? 1 : 0
  out.set(cid, 9)
  return out
}

function decodePeer (bytes: Uint8Array): Peer {
  if (bytes.byteLength < 9) throw new Error('too short')
  const lastSeen = new DataView(bytes.buffer, bytes.byteOffset, 8).getFloat64(0)
  if (!Number.isFinite(lastSeen)) throw new Error('bad time')
  return { lastSeen, stored: lastSeen, supported: bytes[8] === 1, snapshot: bytes.byteLength > 9 ? CID.decode(bytes.subarray(9)) : undefined }
}

export interface CompactionComponents extends SnapshotComponents {
  blockstore: DeletingBlockstore
}

export interface CompactionOptions {
  membershipWindow: number
  /** Known replicas kept at most (default `DEFAULT_MAX_KNOWN_REPLICAS`) */
  maxKnownReplicas?: number
  /** ms after start before anything is deleted (0 without a broadcaster) */
  settle: number
  /** Called when this replica passes a snapshot another replica made (to announce it) */
  onPassed?(): void
  /**
   * Handed work that may go on after `compact()` resolves (LevelDB's
   * compaction of the deleted ranges), for the store to await on `stop()`;
   * without it `compact()` awaits that work itself
   */
  onBackground?(work: Promise<void>): void
}

export class Compaction {
  private readonly peers = new Map<string, Peer>()
  private readonly components: CompactionComponents
  private readonly options: CompactionOptions
  private passed?: { cid: CID, height: number, heads?: SnapshotRoot['heads'] }
  /** Snapshots heard of whose removal is applied here and that were not announced (older, or not including this replica's removals) */
  private readonly settled = new Set<string>()
  private compacted?: CID
  private startedAt = Date.now()
  private waiting?: string
  private blocksBytes = 0
  private readonly considering = new Set<string>()
  private readonly deleter: BlockDeleter
  /** The `z/d` nodes as the last compaction by scan left them, for the next `history()` */
  private deletedHint?: Set<string>
  /** Announced snapshots found not to cover the one compacted here (CID to the compacted snapshot's CID then) */
  private readonly notCovering = new Map<string, string>()
  /** Set once this replica announces snapshots (compaction configured, or `compact()` called) */
  public announcing: boolean

  constructor (components: CompactionComponents, options: CompactionOptions, announcing: boolean) {
    this.components = components
    this.options = options
    this.announcing = announcing
    this.deleter = blockDeleter(components.blockstore, components.log)
  }

  private key (name: string): Key {
    return new Key(`${this.components.engine.layout.namespace}/z/${name}`, false)
  }

  private get peerPrefix (): string {
    return `${this.components.engine.layout.namespace}/z/m`
  }

  private peerKey (peer: string): Key {
    return new Key(`${this.peerPrefix}/${uint8ArrayToString(uint8ArrayFromString(peer), 'base64url')}`, false)
  }

  /**
   * Loads the known replicas recorded under `z/m/`: those heard within the
   * membership window, at most `maxKnownReplicas` (the most recently heard);
   * the others' records are deleted
   */
  private async loadPeers (options?: AbortOptions): Promise<void> {
    const { datastore, log } = this.components
    const prefix = this.peerPrefix + '/'
    const now = Date.now()
    const loaded: Array<{ key: Key, peer: string, state: Peer }> = []
    const stale: Key[] = []
    for await (const { key, value } of datastore.query({ prefix }, options) as AsyncIterable<Pair>) {
      try {
        const peer = uint8ArrayToString(uint8ArrayFromString(key.toString().slice(prefix.length), 'base64url'))
        const state = decodePeer(value)
        if (now - state.lastSeen > this.options.membershipWindow) stale.push(key)
        else loaded.push({ key, peer, state })
      } catch (err: any) {
        log.error('unreadable known-replica record %s - %e', key, err)
        stale.push(key)
      }
    }
    loaded.sort((a, b) => b.state.lastSeen - a.state.lastSeen)
    const max = this.options.maxKnownReplicas ?? DEFAULT_MAX_KNOWN_REPLICAS
    for (const { key } of loaded.splice(max)) stale.push(key)
    for (const { peer, state } of loaded) if (!this.peers.has(peer)) this.peers.set(peer, state)
    if (stale.length > 0) {
      const batch = datastore.batch()
      for (const key of stale) batch.delete(key)
      await batch.commit(options)
    }
  }

  /** Records a known replica when it is new, changed, or last written a while ago; forgets the least recently heard beyond the bound */
  private async storePeer (peer: string, state: Peer, changed: boolean): Promise<void> {
    const { datastore } = this.components
    const max = this.options.maxKnownReplicas ?? DEFAULT_MAX_KNOWN_REPLICAS
    if (this.peers.size > max) {
      let oldest: string | undefined
      for (const [id, p] of this.peers) if (oldest == null || p.lastSeen < (this.peers.get(oldest) as Peer).lastSeen) oldest = id
      if (oldest != null && oldest !== peer) {
        this.peers.delete(oldest)
        await datastore.delete(this.peerKey(oldest))
      }
    }
    if (!changed && state.stored != null && state.lastSeen - state.stored < MEMBERSHIP_WRITE_INTERVAL) return
    state.stored = state.lastSeen
    await datastore.put(this.peerKey(peer), encodePeer(state))
  }

  private get jobPrefix (): string {
    return `${this.components.engine.layout.namespace}/z/j`
  }

  /** Loads what was passed and compacted and the known replicas, and finishes an interrupted compaction */
  async start (options?: AbortOptions): Promise<void> {
    this.startedAt = Date.now()
    const { datastore } = this.components
    await this.loadPeers(options)
    for (const [name, set] of [['p', (cid: CID, height: number) => { this.passed = { cid, height } }], ['k', (cid: CID) => { this.compacted = cid }]] as const) {
      const key = this.key(name)
      if (await datastore.has(key, options)) {
        const bytes = await datastore.get(key, options)
        try {
          const cid = CID.decode(bytes.subarray(0, bytes.byteLength - 4))
          set(cid, new DataView(bytes.buffer, bytes.byteOffset + bytes.byteLength - 4).getUint32(0))
        } catch (err: any) {
          this.components.log.error('unreadable compaction record %s - %e', key, err)
        }
      }
    }
    await this.finishJob(options)
  }

  private record (cid: CID, height: number): Uint8Array {
    const out = new Uint8Array(cid.bytes.byteLength + 4)
    out.set(cid.bytes)
    new DataView(out.buffer).setUint32(cid.bytes.byteLength, Math.min(height, 0xffffffff))
    return out
  }

  /** The snapshot to announce in broadcasts, undefined for "supported, none" */
  get announced (): CID | undefined {
    return this.passed?.cid
  }

  /** Notes an announcer's broadcast: what its payload announces about snapshots (considered in the background, `track`ed) */
  onPayload ({ supported, snapshot }: SnapshotAnnouncement, sender: string, track: (p: Promise<unknown>) => void, options?: AbortOptions): void {
    // an unnamed sender is some replica all the same: it is remembered (and blocks compaction) as one
    const from = sender === '' ? UNNAMED : sender
    const old = this.peers.get(from)
    const state: Peer = { lastSeen: Date.now(), supported, snapshot, stored: old?.stored }
    this.peers.set(from, state)
    const changed = old == null || old.supported !== supported || (old.snapshot == null) !== (snapshot == null) || (snapshot != null && old.snapshot?.equals(snapshot) !== true)
    // recorded only by a replica that compacts (with compaction off nothing is written)
    if (this.announcing) {
      track(this.storePeer(from, state, changed).catch(err => {
        this.components.log('could not record known replica %s - %e', from, err)
      }))
    }
    if (snapshot != null && !(this.passed?.cid.equals(snapshot) ?? false) && !this.considering.has(snapshot.toString()) && !this.settled.has(snapshot.toString())) {
      this.considering.add(snapshot.toString())
      // with the receive loop's signal: stop() does not wait out a fetch of a snapshot nobody serves
      track(this.consider(snapshot, options).catch(err => {
        this.components.log('could not consider announced snapshot %c - %e', snapshot, err)
      }).finally(() => this.considering.delete(snapshot.toString())))
    }
  }

  /**
   * Settles a node announced as a head that lies below the covered heads
   * of the snapshot passed or compacted here though no walk reaches it
   * (see `settleNamedBySnapshot`: the snapshot names it, or it only
   * deletes what the snapshot holds and links to covered nodes). Reads
   * local blocks only. True when it did.
   */
  async settleNamed (node: DecodedNode, options?: AbortOptions): Promise<boolean> {
    const roots = [this.passed?.cid, this.compacted].filter((cid, i, all): cid is CID => cid != null && all.findIndex(c => c?.equals(cid) === true) === i)
    for (const cid of roots) {
      const bytes = await readLocalBlock(this.components.blockstore, cid, options)
      if (bytes == null) continue
      const settled = await settleNamedBySnapshot(this.components, decodeRoot(cid, bytes), new Map([[blockKey(node.cid), node.delta.dagName]]), options)
      if (settled > 0) return true
    }
    return false
  }

  /** Fetches (within a minute) and checks a snapshot root */
  private async readRoot (cid: CID, options?: AbortOptions): Promise<SnapshotRoot> {
    return decodeRoot(cid, await fetchVerified(this.components.blockstore, cid, ROOT_TIMEOUT, options))
  }

  /**
   * Passes an announced snapshot when every covered head is merged here
   * with no walk unfinished or given up (so everything below them is
   * merged) and every block of it is here (fetched and checked now):
   * applies its removal, and announces it when it is newer than the one
   * announced, covers what this replica compacted and includes every
   * removal the one announced carries (a replica announces only a snapshot
   * it can serve, and one that covers every block it deleted)
   */
  async consider (cid: CID, options?: AbortOptions): Promise<void> {
    const { engine } = this.components
    const root = await this.readRoot(cid, options)
    for (const head of root.heads) {
      if (!(await engine.isProcessed(head.cid, options))) return
    }
    // a covered head merged with a walk below it unfinished (or given up) is not passed: the others
    // would delete blocks this replica still lacks
    if ((await engine.pendingBranches(options)).length > 0) return
    if ((await engine.givenUp(options)).some(b => !b.reason.startsWith(MALFORMED_REASON))) return
    const newer = this.newer(cid, root)
    if (!newer && await isApplied(this.components, cid, options)) {
      this.settled.add(cid.toString())
      return
    }
    // a newer snapshot found not to cover the one compacted here (its removal applied) is not read
    // again for every payload announcing it
    const compacted = this.compacted?.toString() ?? ''
    if (newer && this.notCovering.get(cid.toString()) === compacted) return
    // every chunk first (bounded fetches): what follows reads them locally
    await verifySnapshot(this.components.blockstore, cid, { ...options, blockTimeout: ROOT_TIMEOUT })
    const cover = await readCover(this.components.blockstore, root, READ_TIMEOUT, options)
    await applyRemoval(this.components, cid, cover, options)
    if (!newer) {
      this.settled.add(cid.toString())
      return
    }
    if (!(await this.coversCompacted(root, options))) {
      this.components.log('snapshot %c is not announced: it does not cover snapshot %c compacted here', cid, this.compacted)
      if (this.notCovering.size >= MAX_NOT_COVERING) this.notCovering.clear()
      this.notCovering.set(cid.toString(), compacted)
      return
    }
    const why = this.passed == null ? undefined : await notIncluding(this.components, cover, await this.passedHeads(options), options)
    if (why != null) {
      this.components.log('passed snapshot %c but announce %c still: %s', cid, this.passed?.cid, why)
      this.settled.add(cid.toString())
      return
    }
    if (await this.pass(cid, root, options)) this.options.onPassed?.()
  }

  /**
   * Whether `root` is newer than the snapshot passed: higher; or as high
   * and covering all its heads and more (it supersedes it); or as high and
   * neither covers the other, with the greater CID (so replicas agree), or
   * made here now (`own`) of this replica's heads
   */
  private newer (cid: CID, root: SnapshotRoot, own = false): boolean {
    const passed = this.passed
    if (passed == null) return true
    const passedCid = passed.cid.toString()
    if (passedCid === cid.toString()) return false
    const height = Math.max(0, ...root.heads.map(h => h.height))
    if (passed.height !== height) return height > passed.height
    if (own) return true
    const heads = new Set(root.heads.map(h => h.cid.toString()))
    const passedHeads = passed.heads?.map(h => h.cid.toString())
    if (passedHeads != null && passedHeads.every(h => heads.has(h)) && heads.size > passedHeads.length) return true
    if (passedHeads != null && [...heads].every(h => passedHeads.includes(h))) return false
    return cid.toString() > passedCid
  }

  /**
   * Whether every covered head of the snapshot compacted here is at or
   * below a covered head of `root`: found by a walk down from `root`'s
   * covered heads over local blocks (the history merged since that
   * compaction, at most `COVER_CHECK_BUDGET` nodes) and, for heads the walk
   * cannot reach (blocks gone), by `root`'s records naming them
   */
  private async coversCompacted (root: SnapshotRoot, options?: AbortOptions): Promise<boolean> {
    if (this.compacted == null) return true
    let compacted: SnapshotRoot
    try {
      compacted = await this.readRoot(this.compacted, options)
    } catch (err: any) {
      this.components.log('could not read the compacted snapshot %c - %e', this.compacted, err)
      return false
    }
    const wanted = new Map<string, number>()
    const tops = new Set(root.heads.map(h => blockKey(h.cid)))
    for (const head of compacted.heads) if (!tops.has(blockKey(head.cid))) wanted.set(blockKey(head.cid), head.height)
    if (wanted.size === 0) return true
    const floor = Math.min(...wanted.values())
    const seen = new Set<string>(tops)
    const queue: WalkNode[] = []
    let blocked = false
    for (const head of root.heads) {
      const node = await this.readLocal(head.cid, options)
      if (node == null) blocked = true
      else queue.push(node)
    }
    for (let visited = 0; queue.length > 0 && wanted.size > 0; visited++) {
      options?.signal?.throwIfAborted()
      if (visited >= COVER_CHECK_BUDGET) {
        blocked = true
        break
      }
      queue.sort((a, b) => a.height - b.height)
      const node = queue.pop() as WalkNode
      for (const link of node.links) {
        const id = blockKey(link)
        if (seen.has(id)) continue
        seen.add(id)
        wanted.delete(id)
        const child = await this.readLocal(link, options)
        if (child == null) blocked = true
        else if (child.height >= floor) queue.push(child)
      }
    }
    if (wanted.size === 0) return true
    if (!blocked) return false
    const named = await inSnapshotRecords(this.components.blockstore, root, new Set(wanted.keys()), options)
    return named.ids.size === wanted.size
  }

  /** The covered heads of the snapshot announced here */
  private async passedHeads (options?: AbortOptions): Promise<SnapshotRoot['heads']> {
    if (this.passed == null) return []
    if (this.passed.heads == null) this.passed.heads = (await this.readRoot(this.passed.cid, options)).heads
    return this.passed.heads
  }

  /** Records `cid` as the snapshot passed when newer than the current one; true when it is */
  private async pass (cid: CID, root: SnapshotRoot, options?: AbortOptions, own = false): Promise<boolean> {
    if (!this.newer(cid, root, own)) return false
    const height = Math.max(0, ...root.heads.map(h => h.height))
    this.passed = { cid, height, heads: root.heads }
    await this.components.datastore.put(this.key('p'), this.record(cid, height), options)
    return true
  }

  /** Whether no replica is known (none heard within the membership window) and the settle time is over */
  private alone (): boolean {
    if (this.gate(undefined) != null) return false
    const now = Date.now()
    return [...this.peers.values()].every(state => now - state.lastSeen > this.options.membershipWindow)
  }

  /** Why `snapshot` cannot be compacted yet, or undefined when it can (no snapshot: the conditions that hold for any) */
  gate (snapshot: CID | undefined): string | undefined {
    const now = Date.now()
    const left = this.startedAt + this.options.settle - now
    if (left > 0) return `learning which replicas are on the topic (${Math.ceil(left / 1000)} s left)`
    for (const [peer, state] of this.peers) {
      if (now - state.lastSeen > this.options.membershipWindow) continue
      if (peer === UNNAMED) return 'replicas are heard whose payloads do not say who sent them (the broadcaster gives no sender): which of them passed a snapshot cannot be told'
      if (!state.supported) return `replica ${peer} announces no snapshot support (a go-ds-crdt replica, or compaction not configured there)`
      if (snapshot == null) continue
      if (state.snapshot == null || !state.snapshot.equals(snapshot)) return `replica ${peer} has not passed snapshot ${snapshot} yet (it announces ${state.snapshot?.toString() ?? 'none'})`
    }
    return undefined
  }

  /**
   * Makes a snapshot of the current heads, applies its removal here (it
   * leaves out overwritten elements: removal.ts) and announces it: it
   * includes every removal applied here
   */
  async snapshot (options?: MakeSnapshotOptions): Promise<CID> {
    const cid = await makeSnapshot(this.components, options)
    await this.pass(cid, await this.readRoot(cid, options), options, true)
    return cid
  }

  /** Makes a snapshot and compacts it if every known replica has passed it */
  async compact (options?: AbortOptions): Promise<CompactResult> {
    this.announcing = true
    // the merged nodes as the snapshot saw them, for the fast path of apply() (not while waiting on membership)
    let before: ProcessedNodes | undefined
    const onCollected = this.gate(undefined) == null
      ? (collected: { nodes: readonly SnapshotNode[], heads: readonly SnapshotHead[], givenUp: number }) => { before = processedNow(collected) }
      : undefined
    // with no known replica, what the snapshot removes is forgotten at once
    const forget = this.alone()
    let forgotten = 0
    const snapshot = await this.snapshot({ ...options, forget, onRemoved: n => { forgotten = forget ? n : 0 }, onCollected })
    const root = await this.readRoot(snapshot, options)
    // a newer snapshot passed here (another replica's) is the one replicas announce: compact that
    const target = this.passed?.cid ?? snapshot
    const waiting = this.gate(target)
    this.waiting = waiting
    if (waiting != null) {
      this.components.log('compaction waits: %s', waiting)
      return { snapshot, removed: { blocks: 0, entries: 0 }, waiting }
    }
    if (this.compacted?.equals(target) === true) {
      return { snapshot, removed: { blocks: 0, entries: 0 } }
    }
    const removed = await this.apply(target, target.equals(snapshot) ? root : await this.readRoot(target, options), options, target.equals(snapshot) ? before : undefined)
    return { snapshot, removed: { blocks: removed.blocks, entries: removed.entries + forgotten } }
  }

  /**
   * The blocks a compaction of a snapshot of this replica's own heads may
   * delete, without a walk: the nodes processed before it was made (see
   * `processedNow`), less the heads then and its covered heads (their
   * blocks stay) and the nodes whose blocks earlier compactions deleted
   * (`z/d` records)
   */
  private async coveredByScan (processed: ProcessedNodes, root: SnapshotRoot, options?: AbortOptions): Promise<{ blocks: string[], deleted: Set<string> }> {
    const deleted = await this.deletedNodes(options)
    for (const head of root.heads) processed.heads.add(blockKey(head.cid))
    return { blocks: processed.ids.filter(id => !processed.heads.has(id) && !deleted.has(id)), deleted }
  }

  /** The nodes whose blocks compactions deleted (`z/d` records, one range scan) */
  private async deletedNodes (options?: AbortOptions): Promise<Set<string>> {
    const deleted = new Set<string>()
    for await (const key of this.components.datastore.queryKeys({ prefix: this.deletedPrefix + '/' }, options)) deleted.add(key.toString().slice(this.deletedPrefix.length))
    return deleted
  }

  /**
   * Reads a block only when it is stored here (never from the network):
   * `getLocal()` when the blockstore has it, else `get()` with `offline`
   * set. Undefined when the block is not here.
   */
  private async readLocal (cid: CID, options?: AbortOptions): Promise<WalkNode | undefined> {
    const { blockstore } = this.components
    let bytes: Uint8Array
    if (blockstore.getLocal != null) {
      const found = await blockstore.getLocal(cid, options)
      if (found == null) return undefined
      if (found.node != null) return { cid, height: found.node.delta.priority, links: found.node.links }
      bytes = found.bytes
    } else {
      const found = await readLocalBlock(blockstore, cid, options)
      if (found == null) return undefined
      bytes = found
    }
    const node = decodeNode(cid, bytes)
    return { cid, height: node.delta.priority, links: node.links }
  }

  /**
   * Processed nodes no higher than `height`, highest first (block key and
   * height): the order in which a walk down from heads at `height` meets
   * them, so their blocks can be read ahead of it. Markers without a
   * priority are left out (such nodes are read when the walk meets them).
   */
  private async processedBelow (height: number, options?: AbortOptions): Promise<Array<{ id: string, height: number }>> {
    const prefix = this.components.engine.layout.processedPrefix
    const out: Array<{ id: string, height: number }> = []
    for await (const pair of this.components.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<Pair>) {
      if (pair.value.byteLength === 0) continue
      let h: number
      try {
        h = decodePriority(pair.value)
      } catch {
        continue
      }
      if (h <= height) out.push({ id: pair.key.toString().slice(prefix.length), height: h })
    }
    return out.sort((a, b) => b.height - a.height)
  }

  /**
   * Walks the nodes below `root`'s covered heads whose blocks are still
   * here, highest first, and returns their blocks, the heads' own left out
   * (the blocks to delete).
   *
   * Speed: the walk itself is sequential (a node's links are known once it
   * is read), so blocks are read ahead, `READ_AHEAD` at a time, in the order
   * of the processed markers' heights, which is the walk's order; each block
   * is read and decoded once. A read ahead the walk never reaches (a node
   * merged after the snapshot, or not an ancestor) is dropped as the walk
   * passes its height.
   */
  private async walkCovered (heads: Array<{ cid: CID, height: number }>, options?: AbortOptions): Promise<CID[]> {
    const blocks: CID[] = []
    const seen = new Set<string>(heads.map(h => blockKey(h.cid)))
    const isHead = new Set(seen)
    const top = Math.max(0, ...heads.map(h => h.height))
    const ahead = await this.processedBelow(top, options)
    const reads = new Map<string, Promise<WalkNode | undefined>>()
    // ahead[next..]: not passed yet; ahead[..started): reads started (dropped once used or passed)
    let next = 0
    let started = 0
    const readAhead = (height: number): void => {
      while (next < ahead.length && ahead[next].height > height) reads.delete(ahead[next++].id)
      for (started = Math.max(started, next); started < ahead.length && started < next + READ_AHEAD; started++) {
        const { id } = ahead[started]
        const p = this.readLocal(cidFromBlockKey(id), options)
        // a read ahead that fails is read again (and fails loudly) when the walk meets it
        p.catch(() => {})
        reads.set(id, p)
      }
    }
    const read = async (cid: CID, id: string): Promise<WalkNode | undefined> => {
      const p = reads.get(id)
      if (p == null) return this.readLocal(cid, options)
      reads.delete(id)
      try {
        return await p
      } catch {
        return this.readLocal(cid, options)
      }
    }
    const queue: WalkNode[] = []
    for (const head of heads) {
      const node = await this.readLocal(head.cid, options)
      if (node != null) queue.push(node)
    }
    queue.sort((a, b) => a.height - b.height)
    while (queue.length > 0) {
      options?.signal?.throwIfAborted()
      // the highest node is last
      const node = queue.pop() as WalkNode
      const id = blockKey(node.cid)
      const links = node.links.map(l => blockKey(l))
      if (!isHead.has(id)) blocks.push(node.cid)
      readAhead(node.height)
      const children: Array<Promise<WalkNode | undefined>> = []
      for (let i = 0; i < links.length; i++) {
        if (seen.has(links[i])) continue
        seen.add(links[i])
        // only local blocks: never fetch to delete, and a compacted part stops the walk
        children.push(read(node.links[i], links[i]))
      }
      for (const child of await Promise.all(children)) {
        if (child == null) continue
        let i = queue.length
        while (i > 0 && queue[i - 1].height > child.height) i--
        queue.splice(i, 0, child)
      }
    }
    reads.clear()
    return blocks
  }

  /**
   * Deletes what `snapshot` covers (found by a walk down from its covered
   * heads): one atomic batch, then the listed blocks
   */
  private async apply (snapshot: CID, root: SnapshotRoot, options?: AbortOptions, processed?: ProcessedNodes): Promise<{ blocks: number, entries: number }> {
    const { engine, datastore, log } = this.components
    const began = Date.now()
    // block keys of the blocks to delete
    const scanned = processed != null ? await this.coveredByScan(processed, root, options) : undefined
    const blocks = scanned?.blocks ?? (await this.walkCovered(root.heads, options)).map(cid => blockKey(cid))
    const walkMs = Date.now() - began
    const previous = this.compacted != null && !this.compacted.equals(snapshot) ? this.compacted : undefined
    // The element markers to delete are found outside the merge lock (reads only): a merge meanwhile
    // cannot make a tombstoned element live, and the only writer of an element marker is the merge
    // of its node, which is processed already.
    const layout = engine.layout
    const doomed: Key[] = []
    // tombstoned elements: their tombstones say all a merge needs
    const tombed = new Set<string>()
    for await (const key of datastore.queryKeys({ prefix: layout.tombsPrefix + '/' }, options)) {
      tombed.add(key.toString().slice(layout.tombsPrefix.length))
    }
    // one range scan of the element markers and one of the removed elements (none without tombstones)
    if (tombed.size > 0) {
      for (const prefix of [layout.elemsPrefix, layout.removedPrefix]) {
        for await (const key of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
          if (tombed.has(key.toString().slice(prefix.length))) doomed.push(key)
        }
      }
    }
    tombed.clear()
    // removed elements the snapshot's removal covers: every known replica has applied it (it announces
    // the snapshot), so none of them holds these live, and a delete made here need not name them
    // (the snapshot's chunks are read only when there are removed elements: none after a compaction
    // with no known replica, which forgets them as it makes the snapshot)
    if (await this.anyRemoved(options)) {
      const listed = new Set(doomed.map(k => k.toString()))
      const cover = await readCover(this.components.blockstore, root, READ_TIMEOUT, options)
      for (const key of await forgettable(this.components, cover, options)) {
        if (!listed.has(key.toString())) doomed.push(key)
      }
    }
    const entries = doomed.length
    await engine.exclusive(async () => {
      // nothing is read through it: a plain batch (one write, as atomic)
      const batch = datastore.batch()
      for (const key of doomed) batch.delete(key)
      // covered-head records of older installs are below this snapshot
      for await (const key of datastore.queryKeys({ prefix: coveredPrefix(layout) + '/' }, options)) {
        if (!root.heads.some(h => key.toString().endsWith(blockKey(h.cid)))) batch.delete(key)
      }
      batch.put(this.key('k'), this.record(snapshot, 0))
      // the blocks to delete are recorded as deleted up front; the job record says they may still be there
      for (const id of blocks) batch.put(new Key(`${this.deletedPrefix}${id}`, false), EMPTY)
      batch.put(this.jobKey(snapshot), uint8ArrayConcat([JOB_ALL_DELETED, previous?.bytes ?? EMPTY]))
      await batch.commit(options)
    })
    this.compacted = snapshot
    if (scanned != null) {
      // the z/d records as the batch left them, for the history() that follows (see `history`)
      for (const id of blocks) scanned.deleted.add(id)
      this.deletedHint = scanned.deleted
    }
    const committed = Date.now()
    const removed = await this.finishJob(options, { snapshot, blocks, previous })
    // the deletions are committed: LevelDB reclaims their space meanwhile
    const storage = this.compactStorage()
    if (this.options.onBackground != null) this.options.onBackground(storage)
    else await storage
    log('compacted snapshot %c: %d blocks, %d entries removed (%s %d ms, set entries %d ms, blocks %d ms)', snapshot, removed, entries, processed != null ? 'scan' : 'walk', walkMs, committed - began - walkMs, Date.now() - committed)
    return { blocks: removed, entries }
  }

  /** Whether any removed element (`s/r` entry) is stored */
  private async anyRemoved (options?: AbortOptions): Promise<boolean> {
    let found = false
    // (at most one key)
    for await (const key of this.components.datastore.queryKeys({ prefix: this.components.engine.layout.removedPrefix + '/', limit: 1 }, options)) found = key != null
    return found
  }

  /**
   * Asks LevelDB-backed stores (datastore-level and blockstore-level expose
   * their `db`) to compact the ranges a compaction deleted from: LevelDB
   * keeps deleted entries in its files until its own compactions reach them,
   * which for a range nothing writes to again can be never. Any other store
   * is left alone; a failure is logged (the deletions are committed). Runs
   * after `compact()` resolved when the store takes it as background work
   * (it cannot be aborted: LevelDB's compactRange has no signal).
   */
  private async compactStorage (): Promise<void> {
    const namespace = this.components.engine.layout.namespace
    const ranges: Array<[unknown, string, string]> = [
      [this.components.datastore, `${namespace}/`, `${namespace}/\uffff`],
      [this.components.blockstore, '', '\uffff']
    ]
    for (const [store, start, end] of ranges) {
      const db = (store as { db?: { compactRange?(start: string, end: string): Promise<void> } }).db
      if (typeof db?.compactRange !== 'function') continue
      try {
        await db.compactRange(start, end)
      } catch (err: any) {
        this.components.log('could not compact the LevelDB range after a compaction - %e', err)
      }
    }
  }

  /**
   * Deletes the blocks a compaction recorded, then its job record. A job
   * record `z/j<block key of the snapshot>` whose value is
   * `JOB_ALL_DELETED` means "the blocks of the `z/d` records may still be
   * here": the compaction that just wrote it hands its list over, and
   * `start()` after a crash deletes the blocks of every `z/d` record
   * (deleting a block twice is harmless). Entries of the older form (one
   * per block, empty value) are deleted one by one as before.
   */
  private async finishJob (options?: AbortOptions, job?: { snapshot: CID, blocks: string[], previous?: CID }): Promise<number> {
    const { datastore } = this.components
    const prefix = this.jobPrefix
    let removed = 0
    if (job != null) {
      removed += await this.deleteBlocks(job.blocks, options)
      removed += await this.deletePrevious(job.previous, options)
      await datastore.delete(this.jobKey(job.snapshot), options)
    }
    // whatever is still listed (after a crash)
    while (true) {
      options?.signal?.throwIfAborted()
      const listed: Array<{ key: Key, all: boolean, previous?: CID }> = []
      for await (const { key, value } of datastore.query({ prefix: prefix + '/', limit: DELETE_BATCH }, options) as AsyncIterable<Pair>) {
        let previous: CID | undefined
        try {
          previous = value.byteLength > 1 ? CID.decode(value.subarray(1)) : undefined
        } catch {
          // unreadable: the previous snapshot's blocks are left, as when its root is gone
        }
        listed.push({ key, all: value.byteLength > 0, previous })
      }
      if (listed.length === 0) return removed
      for (const { key, all, previous } of listed) {
        if (!all) continue
        removed += await this.deletePrevious(previous, options)
        let ids: string[] = []
        for await (const deleted of datastore.queryKeys({ prefix: this.deletedPrefix + '/' }, options)) {
          ids.push(deleted.toString().slice(this.deletedPrefix.length))
          if (ids.length >= DELETE_BATCH * 16) {
            removed += await this.deleteBlocks(ids, options)
            ids = []
          }
        }
        removed += await this.deleteBlocks(ids, options)
        await datastore.delete(key, options)
      }
      const single = listed.filter(l => !l.all).map(l => l.key)
      if (single.length > 0) {
        removed += await this.deleteBlocks(single.map(key => key.toString().slice(prefix.length)), options)
        const batch = datastore.batch()
        for (const key of single) {
          batch.delete(key)
          batch.put(new Key(`${this.deletedPrefix}${key.toString().slice(prefix.length)}`, false), EMPTY)
        }
        await batch.commit(options)
      }
    }
  }

  /**
   * Deletes the blocks of the snapshot compacted before (the one compacted
   * now replaces it), except those the snapshot compacted now shares with
   * it (chunks are content-addressed, so an unchanged chunk is the same
   * block); its root last. Nothing when its root is not here any more.
   */
  private async deletePrevious (previous: CID | undefined, options?: AbortOptions): Promise<number> {
    if (previous == null || this.compacted?.equals(previous) === true) return 0
    let old: SnapshotRoot
    let current: SnapshotRoot | undefined
    try {
      old = decodeRoot(previous, await readLocalBlock(this.components.blockstore, previous, options) ?? new Uint8Array(0))
      const bytes = this.compacted == null ? undefined : await readLocalBlock(this.components.blockstore, this.compacted, options)
      current = this.compacted == null || bytes == null ? undefined : decodeRoot(this.compacted, bytes)
    } catch (err: any) {
      options?.signal?.throwIfAborted()
      this.components.log('the previous compacted snapshot %c is gone or unreadable; its blocks are left - %e', previous, err)
      return 0
    }
    const keep = new Set(current == null ? [] : [...current.elementChunks, ...current.tombstoneChunks, ...current.nodeChunks].map(cid => blockKey(cid)))
    const chunks = [...old.elementChunks, ...old.tombstoneChunks, ...old.nodeChunks].map(cid => blockKey(cid)).filter(id => !keep.has(id))
    return await this.deleteBlocks(chunks, options) + await this.deleteBlocks([blockKey(previous)], options)
  }

  private jobKey (snapshot: CID): Key {
    return new Key(`${this.jobPrefix}${blockKey(snapshot)}`, false)
  }

  /** Deletes blocks (block keys; anything else is skipped); returns how many it asked to delete */
  private async deleteBlocks (ids: string[], options?: AbortOptions): Promise<number> {
    const cids: CID[] = []
    for (const id of ids) {
      try {
        cids.push(cidFromBlockKey(id))
      } catch {
        // not a block key: nothing to delete
      }
    }
    return this.deleter.delete(cids, options)
  }

  /** Records of the nodes whose blocks compactions deleted (`z/d<block key>`) */
  private get deletedPrefix (): string {
    return `${this.components.engine.layout.namespace}/z/d`
  }

  /**
   * Counts the merged nodes whose blocks are kept and their bytes (blocks
   * read `DELETE_BATCH` at a time; nodes a compaction deleted are skipped
   * without a read, so a block put back later is not counted)
   */
  async history (options?: AbortOptions): Promise<HistoryStats> {
    const { datastore, blockstore, engine } = this.components
    const prefix = engine.layout.processedPrefix
    let nodes = 0
    let bytes = 0
    const count = async (cids: CID[]): Promise<void> => {
      await Promise.all(cids.map(async cid => {
        if (!(await blockstore.has(cid, options))) return
        nodes++
        for await (const chunk of blockstore.get(cid, options)) bytes += chunk.byteLength
      }))
    }
    // nodes whose blocks a compaction deleted are not read again (once, the set the last compaction
    // by scan committed: one missing records written since costs only reads, as a block not here
    // is not counted)
    const deleted = this.deletedHint ?? await this.deletedNodes(options)
    this.deletedHint = undefined
    let cids: CID[] = []
    for await (const key of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
      const id = key.toString().slice(prefix.length)
      if (deleted.has(id)) continue
      try {
        cids.push(cidFromBlockKey(id))
      } catch {
        continue
      }
      if (cids.length >= DELETE_BATCH) {
        await count(cids)
        cids = []
      }
    }
    await count(cids)
    this.blocksBytes = bytes
    return { ...this.summary(), nodes, blocksBytes: bytes }
  }

  /** What is known without scanning */
  summary (): { blocksBytes: number, snapshot?: CID, compacted?: CID, waiting?: string } {
    return { blocksBytes: this.blocksBytes, snapshot: this.passed?.cid, compacted: this.compacted, waiting: this.waiting }
  }

  /** Whether the compacted snapshot's nodes are there to count: used by the interval policy */
  get lastWaiting (): string | undefined {
    return this.waiting
  }
}
