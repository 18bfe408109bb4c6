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
 * heads it has all merged), and announces the newest one that includes
 * every removal it announced before (removal.ts `notIncluding`), so the
 * removals a replica relies on stay announced. A known replica whose broadcasts lack the field
 * (go-ds-crdt, or compaction not configured) blocks compaction; so does
 * one that has not passed the snapshot yet; the reason is logged and shown
 * in `stats().history.waiting`. A store with a broadcaster waits
 * `settle` ms after start (it must hear the topic first) before it deletes
 * anything.
 *
 * Atomicity: one datastore batch deletes the set entries, records the
 * compacted snapshot (`z/k`) and lists the blocks to delete (`z/j/<cid>`);
 * the blocks are then deleted one by one, each with its `z/j` entry. A
 * crash in between leaves the list, and `start()` finishes it: after a
 * reopen a compaction is either absent or complete.
 */

import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { concat as uint8ArrayConcat } from 'uint8arrays/concat'
import { fromString as uint8ArrayFromString } from 'uint8arrays/from-string'
import { toString as uint8ArrayToString } from 'uint8arrays/to-string'
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { decodeNode } from '../codec/dag-node.js'
import { decodePriority } from '../crdt/or-set.js'
import { WriteSet } from '../crdt/write-set.js'
import { coveredPrefix } from './cover.js'
import { makeSnapshot } from './create.js'
import { decodeRoot, verifyBlock } from './format.js'
import { applyRemoval, forgettable, isApplied, notIncluding, readCover } from './removal.js'
import type { MakeSnapshotOptions, SnapshotComponents } from './create.js'
import type { SnapshotRoot } from './format.js'
import type { SnapshotAnnouncement } from '../codec/broadcast-snapshot.js'
import type { DAGBlockstore } from '../interfaces.js'
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

/** Blocks a compaction reads ahead of its walk, and deletes per batch */
const READ_AHEAD = 16
const DELETE_BATCH = 1024
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
  blockstore: DAGBlockstore & {
    delete?(cid: CID, options?: AbortOptions): unknown
    deleteMany?(source: Iterable<CID>, options?: AbortOptions): AsyncIterable<unknown> | Iterable<unknown>
  }
}

export interface CompactionOptions {
  membershipWindow: number
  /** Known replicas kept at most (default `DEFAULT_MAX_KNOWN_REPLICAS`) */
  maxKnownReplicas?: number
  /** ms after start before anything is deleted (0 without a broadcaster) */
  settle: number
  /** Called when this replica passes a snapshot another replica made (to announce it) */
  onPassed?(): void
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
  /** Set once this replica announces snapshots (compaction configured, or `compact()` called) */
  public announcing: boolean

  constructor (components: CompactionComponents, options: CompactionOptions, announcing: boolean) {
    this.components = components
    this.options = options
    this.announcing = announcing
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

  /** Notes an announcer's broadcast: what its payload announces about snapshots */
  onPayload ({ supported, snapshot }: SnapshotAnnouncement, from: string, track: (p: Promise<unknown>) => void): void {
    if (from === '') return
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
      track(this.consider(snapshot).catch(err => {
        this.components.log('could not consider announced snapshot %c - %e', snapshot, err)
      }).finally(() => this.considering.delete(snapshot.toString())))
    }
  }

  /** Fetches (within a minute) and checks a snapshot root */
  private async readRoot (cid: CID, options?: AbortOptions): Promise<SnapshotRoot> {
    const chunks: Uint8Array[] = []
    const signal = AbortSignal.any([AbortSignal.timeout(60_000), ...(options?.signal != null ? [options.signal] : [])])
    for await (const chunk of this.components.blockstore.get(cid, { signal })) chunks.push(chunk)
    const bytes = chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
    await verifyBlock(cid, bytes)
    return decodeRoot(cid, bytes)
  }

  /**
   * Passes an announced snapshot when every covered head is merged here:
   * applies its removal, and announces it when it is newer than the one
   * announced and includes every removal that one carries
   */
  async consider (cid: CID, options?: AbortOptions): Promise<void> {
    const root = await this.readRoot(cid, options)
    for (const head of root.heads) {
      if (!(await this.components.engine.isProcessed(head.cid, options))) return
    }
    const newer = this.isNewer(cid, root, false)
    if (!newer && await isApplied(this.components, cid, options)) {
      this.settled.add(cid.toString())
      return
    }
    const cover = await readCover(this.components.blockstore, root, READ_TIMEOUT, options)
    await applyRemoval(this.components, cid, cover, options)
    if (!newer) {
      this.settled.add(cid.toString())
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

  /** The covered heads of the snapshot announced here */
  private async passedHeads (options?: AbortOptions): Promise<SnapshotRoot['heads']> {
    if (this.passed == null) return []
    if (this.passed.heads == null) this.passed.heads = (await this.readRoot(this.passed.cid, options)).heads
    return this.passed.heads
  }

  /** Whether `cid` would replace the snapshot announced here (newer; for one made here, as new) */
  private isNewer (cid: CID, root: SnapshotRoot, own: boolean): boolean {
    const height = Math.max(0, ...root.heads.map(h => h.height))
    if (this.passed?.cid.equals(cid) === true) return false
    return this.passed == null || this.passed.height < height || (this.passed.height === height && (own || this.passed.cid.toString() < cid.toString()))
  }

  /** Records `cid` as the snapshot passed when newer than the current one; true when it is */
  private async pass (cid: CID, root: SnapshotRoot, options?: AbortOptions, own = false): Promise<boolean> {
    if (!this.isNewer(cid, root, own)) return false
    const height = Math.max(0, ...root.heads.map(h => h.height))
    this.passed = { cid, height, heads: root.heads }
    await this.components.datastore.put(this.key('p'), this.record(cid, height), options)
    return true
  }

  /** Why `snapshot` cannot be compacted yet, or undefined when it can */
  gate (snapshot: CID | undefined): string | undefined {
    const now = Date.now()
    const left = this.startedAt + this.options.settle - now
    if (left > 0) return `learning which replicas are on the topic (${Math.ceil(left / 1000)} s left)`
    for (const [peer, state] of this.peers) {
      if (now - state.lastSeen > this.options.membershipWindow) continue
      if (!state.supported) return `replica ${peer} announces no snapshot support (a go-ds-crdt replica, or compaction not configured there)`
      if (state.snapshot == null || snapshot == null || !state.snapshot.equals(snapshot)) return `replica ${peer} has not passed snapshot ${snapshot} yet (it announces ${state.snapshot?.toString() ?? 'none'})`
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
    // with no known replica the gate passes at once: what the snapshot removes is forgotten at once too
    const forget = this.gate(undefined) == null
    let forgotten = 0
    const snapshot = await this.snapshot({ ...options, forget, onRemoved: n => { forgotten = forget ? n : 0 } })
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
    const removed = await this.apply(target, target.equals(snapshot) ? root : await this.readRoot(target, options), options)
    return { snapshot, removed: { blocks: removed.blocks, entries: removed.entries + forgotten } }
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
      // one read, not has() then get(): `offline` keeps Helia's blockstore from asking the network,
      // and a store that only stores locally says NotFoundError
      const chunks: Uint8Array[] = []
      try {
        for await (const chunk of blockstore.get(cid, { ...options, offline: true } as AbortOptions)) chunks.push(chunk)
      } catch (err: any) {
        if (err?.name === 'NotFoundError') return undefined
        throw err
      }
      bytes = chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks)
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
  private async apply (snapshot: CID, root: SnapshotRoot, options?: AbortOptions): Promise<{ blocks: number, entries: number }> {
    const { engine, datastore, log } = this.components
    const began = Date.now()
    const blocks = await this.walkCovered(root.heads, options)
    const walkMs = Date.now() - began
    if (this.compacted != null && !this.compacted.equals(snapshot)) {
      // the previous compacted snapshot's blocks: the new one replaces it
      try {
        const old = await this.readRoot(this.compacted, options)
        blocks.push(...old.elementChunks, ...old.tombstoneChunks, ...old.nodeChunks, this.compacted)
      } catch (err: any) {
        log('could not read the previous compacted snapshot %c - %e', this.compacted, err)
      }
    }
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
    // one range scan of the element markers, one of the removed elements
    for (const prefix of [layout.elemsPrefix, layout.removedPrefix]) {
      for await (const key of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
        if (tombed.has(key.toString().slice(prefix.length))) doomed.push(key)
      }
    }
    tombed.clear()
    // removed elements the snapshot's removal covers: every known replica has applied it (it announces
    // the snapshot), so none of them holds these live, and a delete made here need not name them
    const listed = new Set(doomed.map(k => k.toString()))
    const cover = await readCover(this.components.blockstore, root, READ_TIMEOUT, options)
    for (const key of await forgettable(this.components, cover, options)) {
      if (!listed.has(key.toString())) doomed.push(key)
    }
    const entries = doomed.length
    await engine.exclusive(async () => {
      const tx = new WriteSet(datastore)
      for (const key of doomed) tx.delete(key)
      // covered-head records of older installs are below this snapshot
      for await (const key of datastore.queryKeys({ prefix: coveredPrefix(layout) + '/' }, options)) {
        if (!root.heads.some(h => key.toString().endsWith(blockKey(h.cid)))) tx.delete(key)
      }
      tx.put(this.key('k'), this.record(snapshot, 0))
      for (const cid of blocks) tx.put(new Key(`${this.jobPrefix}${blockKey(cid)}`, false), new Uint8Array(0))
      await tx.commit(options)
    })
    this.compacted = snapshot
    const committed = Date.now()
    const removed = await this.finishJob(options)
    await this.compactStorage(options)
    log('compacted snapshot %c: %d blocks, %d entries removed (walk %d ms, set entries %d ms, blocks %d ms)', snapshot, removed, entries, walkMs, committed - began - walkMs, Date.now() - committed)
    return { blocks: removed, entries }
  }

  /**
   * Asks LevelDB-backed stores (datastore-level and blockstore-level expose
   * their `db`) to compact the ranges a compaction deleted from: LevelDB
   * keeps deleted entries in its files until its own compactions reach them,
   * which for a range nothing writes to again can be never. Any other store
   * is left alone; a failure is logged (the deletions are committed).
   */
  private async compactStorage (options?: AbortOptions): Promise<void> {
    const namespace = this.components.engine.layout.namespace
    const ranges: Array<[unknown, string, string]> = [
      [this.components.datastore, `${namespace}/`, `${namespace}/\uffff`],
      [this.components.blockstore, '', '\uffff']
    ]
    for (const [store, start, end] of ranges) {
      const db = (store as { db?: { compactRange?(start: string, end: string): Promise<void> } }).db
      if (typeof db?.compactRange !== 'function') continue
      options?.signal?.throwIfAborted()
      try {
        await db.compactRange(start, end)
      } catch (err: any) {
        this.components.log('could not compact the LevelDB range after a compaction - %e', err)
      }
    }
  }

  /**
   * Deletes the blocks listed by a compaction, then their list entries, in
   * batches of `DELETE_BATCH` (a crash in between leaves entries whose
   * blocks are gone: deleting them again is harmless)
   */
  private async finishJob (options?: AbortOptions): Promise<number> {
    const { datastore, blockstore, log } = this.components
    const prefix = this.jobPrefix
    let removed = 0
    let warned = false
    while (true) {
      options?.signal?.throwIfAborted()
      const keys: Key[] = []
      for await (const key of datastore.queryKeys({ prefix: prefix + '/', limit: DELETE_BATCH }, options)) keys.push(key)
      if (keys.length === 0) return removed
      if (blockstore.delete == null && blockstore.deleteMany == null) {
        if (!warned) log('the blockstore cannot delete blocks: covered blocks kept')
        warned = true
      } else {
        // the walk listed only blocks it read here: no has() (after a crash some may be gone already)
        const cids = keys.map(key => cidFromBlockKey(key.toString().slice(prefix.length)))
        // deletes side by side (a base blockstore's deleteMany runs them one after another)
        if (blockstore.delete != null) {
          await Promise.all(cids.map(async cid => blockstore.delete?.(cid, options)))
        } else if (blockstore.deleteMany != null) {
          for await (const deleted of blockstore.deleteMany(cids, options)) void deleted
        }
        removed += cids.length
      }
      const batch = datastore.batch()
      for (const key of keys) batch.delete(key)
      await batch.commit(options)
    }
  }

  /** Counts the merged nodes whose blocks are kept and their bytes (blocks read `DELETE_BATCH` at a time) */
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
    let cids: CID[] = []
    for await (const key of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
      try {
        cids.push(cidFromBlockKey(key.toString().slice(prefix.length)))
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
