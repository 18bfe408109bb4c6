/**
 * Compaction (issue #16): make a snapshot of the current heads and, once
 * every known replica has passed it, delete what it covers: the blocks of
 * the DAG nodes below its covered heads and the element markers of
 * tombstoned elements. Processed markers stay (as in go-ds-crdt #369), so a
 * covered node that arrives again is skipped; tombstones stay, so a covered
 * element that arrives again (from a replica that never passed the
 * snapshot) cannot come back.
 *
 * Membership: a *known replica* is an announcer heard on the topic within
 * `membershipWindow` (default one day) since this store started. A replica
 * has passed* a snapshot when it announces it (Head field 101,
 * src/codec/broadcast-snapshot.ts). Every replica announces the newest
 * snapshot it has passed: one it made, or one it heard of whose covered
 * heads it has all merged. A known replica whose broadcasts lack the field
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
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { readSnapshotAnnouncement } from '../codec/broadcast-snapshot.js'
import { decodeNode } from '../codec/dag-node.js'
import { WriteSet } from '../crdt/write-set.js'
import { coveredPrefix } from './cover.js'
import { createSnapshot } from './create.js'
import { decodeRoot, verifyBlock } from './format.js'
import type { SnapshotComponents } from './create.js'
import type { SnapshotRoot } from './format.js'
import type { DAGBlockstore } from '../interfaces.js'
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
}

export const DEFAULT_COMPACTION_INTERVAL = 3_600_000
export const DEFAULT_COMPACTION_MIN_NODES = 10_000
export const DEFAULT_MEMBERSHIP_WINDOW = 86_400_000

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
}

export interface CompactionComponents extends SnapshotComponents {
  blockstore: DAGBlockstore & { delete?(cid: CID, options?: AbortOptions): unknown }
}

export interface CompactionOptions {
  membershipWindow: number
  /** ms after start before anything is deleted (0 without a broadcaster) */
  settle: number
  /** Called when this replica passes a snapshot another replica made (to announce it) */
  onPassed?(): void
}

export class Compaction {
  private readonly peers = new Map<string, Peer>()
  private readonly components: CompactionComponents
  private readonly options: CompactionOptions
  private passed?: { cid: CID, height: number }
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

  private get jobPrefix (): string {
    return `${this.components.engine.layout.namespace}/z/j`
  }

  /** Loads what was passed and compacted, and finishes an interrupted compaction */
  async start (options?: AbortOptions): Promise<void> {
    this.startedAt = Date.now()
    const { datastore } = this.components
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

  /** Notes an announcer's broadcast */
  onPayload (data: Uint8Array, from: string, track: (p: Promise<unknown>) => void): void {
    if (from === '') return
    const { supported, snapshot } = readSnapshotAnnouncement(data)
    this.peers.set(from, { lastSeen: Date.now(), supported, snapshot })
    if (snapshot != null && !(this.passed?.cid.equals(snapshot) ?? false) && !this.considering.has(snapshot.toString())) {
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

  /** Adopts an announced snapshot as passed when every covered head is merged here and it is newer */
  async consider (cid: CID, options?: AbortOptions): Promise<void> {
    const root = await this.readRoot(cid, options)
    for (const head of root.heads) {
      if (!(await this.components.engine.isProcessed(head.cid, options))) return
    }
    if (await this.pass(cid, root, options)) this.options.onPassed?.()
  }

  /** Records `cid` as the snapshot passed when newer than the current one; true when it is */
  private async pass (cid: CID, root: SnapshotRoot, options?: AbortOptions, own = false): Promise<boolean> {
    const height = Math.max(0, ...root.heads.map(h => h.height))
    if (this.passed?.cid.equals(cid) === true) return false
    // a snapshot this replica just made of its heads replaces one of the same height (it may be
    // smaller: an earlier compaction dropped superseded elements)
    if (this.passed != null && (this.passed.height > height || (this.passed.height === height && !own && this.passed.cid.toString() >= cid.toString()))) return false
    this.passed = { cid, height }
    await this.components.datastore.put(this.key('p'), this.record(cid, height), options)
    return true
  }

  /** Why `snapshot` cannot be compacted yet, or undefined when it can */
  gate (snapshot: CID): string | undefined {
    const now = Date.now()
    const left = this.startedAt + this.options.settle - now
    if (left > 0) return `learning which replicas are on the topic (${Math.ceil(left / 1000)} s left)`
    for (const [peer, state] of this.peers) {
      if (now - state.lastSeen > this.options.membershipWindow) continue
      if (!state.supported) return `replica ${peer} announces no snapshot support (a go-ds-crdt replica, or compaction not configured there)`
      if (state.snapshot == null || !state.snapshot.equals(snapshot)) return `replica ${peer} has not passed snapshot ${snapshot} yet (it announces ${state.snapshot?.toString() ?? 'none'})`
    }
    return undefined
  }

  /** Makes a snapshot and compacts it if every known replica has passed it */
  async compact (options?: AbortOptions): Promise<CompactResult> {
    this.announcing = true
    const snapshot = await createSnapshot(this.components, options)
    const root = await this.readRoot(snapshot, options)
    await this.pass(snapshot, root, options, true)
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
    return { snapshot, removed }
  }

  /**
   * Walks the nodes below `root`'s covered heads whose blocks are still
   * here, highest first, and returns the blocks to delete (all but the
   * covered heads)
   */
  private async walkCovered (root: SnapshotRoot, options?: AbortOptions): Promise<CID[]> {
    const { blockstore } = this.components
    const blocks: CID[] = []
    const seen = new Set<string>(root.heads.map(h => blockKey(h.cid)))
    const isHead = new Set(seen)
    const read = async (cid: CID): Promise<{ cid: CID, height: number, links: CID[] }> => {
      const chunks: Uint8Array[] = []
      for await (const chunk of blockstore.get(cid, options)) chunks.push(chunk)
      const node = decodeNode(cid, chunks.length === 1 ? chunks[0] : uint8ArrayConcat(chunks))
      return { cid, height: node.delta.priority, links: node.links }
    }
    const queue: Array<{ cid: CID, height: number, links: CID[] }> = []
    for (const head of root.heads) {
      if (await blockstore.has(head.cid, options)) queue.push(await read(head.cid))
    }
    queue.sort((a, b) => a.height - b.height)
    while (queue.length > 0) {
      options?.signal?.throwIfAborted()
      // the highest node is last
      const node = queue.pop() as { cid: CID, height: number, links: CID[] }
      const id = blockKey(node.cid)
      if (!isHead.has(id)) blocks.push(node.cid)
      for (const link of node.links) {
        const k = blockKey(link)
        if (seen.has(k)) continue
        seen.add(k)
        // only local blocks: never fetch to delete, and a compacted part stops the walk
        if (!(await blockstore.has(link, options))) continue
        const child = await read(link)
        let i = queue.length
        while (i > 0 && queue[i - 1].height > child.height) i--
        queue.splice(i, 0, child)
      }
    }
    return blocks
  }

  /** Deletes what `snapshot` covers: one atomic batch, then the listed blocks */
  private async apply (snapshot: CID, root: SnapshotRoot, options?: AbortOptions): Promise<{ blocks: number, entries: number }> {
    const { engine, datastore, log } = this.components
    const blocks = await this.walkCovered(root, options)
    if (this.compacted != null && !this.compacted.equals(snapshot)) {
      // the previous compacted snapshot's blocks: the new one replaces it
      try {
        const old = await this.readRoot(this.compacted, options)
        blocks.push(...old.elementChunks, ...old.tombstoneChunks, this.compacted)
      } catch (err: any) {
        log('could not read the previous compacted snapshot %c - %e', this.compacted, err)
      }
    }
    let entries = 0
    await engine.exclusive(async () => {
      const tx = new WriteSet(datastore)
      const layout = engine.layout
      // tombstoned elements: their tombstones say all a merge needs
      for await (const key of datastore.queryKeys({ prefix: layout.tombsPrefix + '/' }, options)) {
        const elem = new Key(layout.elemsPrefix + key.toString().slice(layout.tombsPrefix.length), false)
        if (await datastore.has(elem, options)) {
          tx.delete(elem)
          entries++
        }
      }
      // Elements superseded by a higher one stay: a delete made here tombstones only the
      // elements kept here, so dropping one would leave it live on every replica that kept it,
      // and the delete would bring its older value back there.
      // covered-head records of older installs are below this snapshot
      for await (const key of datastore.queryKeys({ prefix: coveredPrefix(layout) + '/' }, options)) {
        if (!root.heads.some(h => key.toString().endsWith(blockKey(h.cid)))) tx.delete(key)
      }
      tx.put(this.key('k'), this.record(snapshot, 0))
      for (const cid of blocks) tx.put(new Key(`${this.jobPrefix}${blockKey(cid)}`, false), new Uint8Array(0))
      await tx.commit(options)
    })
    this.compacted = snapshot
    const removed = await this.finishJob(options)
    log('compacted snapshot %c: %d blocks, %d entries removed', snapshot, removed, entries)
    return { blocks: removed, entries }
  }

  /** Deletes the blocks listed by a compaction, each with its list entry */
  private async finishJob (options?: AbortOptions): Promise<number> {
    const { datastore, blockstore, log } = this.components
    const keys: Key[] = []
    for await (const key of datastore.queryKeys({ prefix: this.jobPrefix + '/' }, options)) keys.push(key)
    if (keys.length === 0) return 0
    if (blockstore.delete == null) {
      log('the blockstore cannot delete blocks: %d covered blocks kept', keys.length)
    }
    let removed = 0
    for (const key of keys) {
      options?.signal?.throwIfAborted()
      if (blockstore.delete != null) {
        const cid = cidFromBlockKey(key.toString().slice(this.jobPrefix.length))
        if (await blockstore.has(cid, options)) {
          await blockstore.delete(cid, options)
          removed++
        }
      }
      await datastore.delete(key, options)
    }
    return removed
  }

  /** Counts the merged nodes whose blocks are kept and their bytes */
  async history (options?: AbortOptions): Promise<HistoryStats> {
    const { datastore, blockstore, engine } = this.components
    const prefix = engine.layout.processedPrefix
    let nodes = 0
    let bytes = 0
    for await (const key of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
      let cid: CID
      try {
        cid = cidFromBlockKey(key.toString().slice(prefix.length))
      } catch {
        continue
      }
      if (!(await blockstore.has(cid, options))) continue
      nodes++
      for await (const chunk of blockstore.get(cid, options)) bytes += chunk.byteLength
    }
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
