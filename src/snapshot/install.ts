/**
 * Installing a snapshot: fetches the root and every chunk through the
 * blockstore (which fetches missing blocks from peers), checks each block
 * against its CID and every record, then merges the snapshot into the set
 * like any other node, chunk by chunk, and makes its covered heads heads.
 * Memory stays bounded by a chunk (plus one priority per node id while
 * checking), not by the snapshot.
 *
 * Invariants:
 * - In trusted mode only a snapshot a current writer announced in a signed
 *   broadcast, or one this replica made, is installed (`UntrustedSnapshotError`).
 * - Nothing is written until every block is fetched and checked (a first
 *   pass): a snapshot that is corrupt, truncated or out of order changes
 *   nothing (`InvalidSnapshotError`).
 * - Atomic across crashes: an install record `z/i<root>` is written before
 *   the first chunk's batch and deleted by the last batch; `start()` merges
 *   a recorded snapshot again (`resumeInstalls`), so after a reopen an
 *   install is absent or complete. While it runs, readers may see the
 *   chunks merged so far (each a valid merge of part of the snapshot).
 * - The merge is the OR-set merge: tombstones first, then each element under
 *   its original id and priority, with the tombstone check on. It is
 *   commutative and idempotent, and a delete the replica already merged
 *   (or the snapshot carries) keeps its key deleted. An element of a node
 *   this replica has processed is skipped: it holds that element already,
 *   or tombstoned or removed it, and a removed element never comes back
 *   (unless a walk settled the node as merged by a snapshot while the
 *   chunks merged: its elements in later chunks are merged all the same).
 * - Every covered node gets a processed marker (so a covered node that
 *   arrives later is skipped), an unfinished walk of one is dropped, and a
 *   head that is a covered node but not a covered head is dropped. A
 *   covered head this replica has already processed is left alone; any
 *   other becomes a head unless a processed node links to it (its `w/`
 *   record says so, or for a branch given up its `g/` record). A walk that
 *   meets a covered head while the install runs settles it the same way
 *   (`InstallingHeads`).
 * - Then the snapshot's removal is applied (removal.ts): an element of a
 *   covered node that the snapshot does not list is removed here too.
 */

import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { blockKey } from '../codec/block-key.js'
import { encodePriority } from '../crdt/or-set.js'
import { WriteSet } from '../crdt/write-set.js'
import { MALFORMED_REASON } from '../engine/engine.js'
import { InvalidSnapshotError } from '../errors.js'
import { coveredKey, encodeHeight, settleBelowCovered } from './cover.js'
import { fetchVerified } from './fetch.js'
import { compareRecords, decodeElementChunk, decodeNodeChunk, decodeRoot, decodeTombstoneChunk } from './format.js'
import { applyRemoval, readCover } from './removal.js'
import type { SnapshotComponents } from './create.js'
import type { SnapshotElement, SnapshotNode, SnapshotRoot, SnapshotTombstone } from './format.js'
import type { Layout } from '../crdt/layout.js'
import type { SetChange } from '../crdt/or-set.js'
import type { BlockGetter } from '../engine/engine.js'
import type { Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** What installing a snapshot did */
export interface InstallResult {
  /** The snapshot's root */
  root: SnapshotRoot
  /** Covered heads this replica did not have and now has as heads */
  newHeads: number
  /** Keys whose visible value changed */
  changes: number
}

/** How long (ms) one snapshot block may take to fetch; 0 waits forever */
export const DEFAULT_SNAPSHOT_BLOCK_TIMEOUT = 300_000

export interface InstallSnapshotOptions extends AbortOptions {
  /**
   * How long (ms) one snapshot block may take to fetch; 0 waits forever
   *
   * @default 300_000
   */
  blockTimeout?: number
}

function checkOrder <T extends { key: string, id: string }> (records: T[], what: string): void {
  for (let i = 1; i < records.length; i++) {
    if (compareRecords(records[i - 1], records[i]) >= 0) {
      throw new InvalidSnapshotError(`Snapshot ${what} are not in strictly ascending order at ${records[i].key} ${records[i].id}`)
    }
  }
}

function checkNodeOrder (records: SnapshotNode[]): void {
  for (let i = 1; i < records.length; i++) {
    if (records[i - 1].id >= records[i].id) {
      throw new InvalidSnapshotError(`Snapshot nodes are not in strictly ascending order at ${records[i].id}`)
    }
  }
}

/** Fetches, checks and decodes a whole snapshot */
export async function readSnapshot (getter: BlockGetter, cid: CID, options?: InstallSnapshotOptions): Promise<{ root: SnapshotRoot, elements: SnapshotElement[], tombstones: SnapshotTombstone[], nodes: SnapshotNode[] }> {
  const timeout = options?.blockTimeout ?? DEFAULT_SNAPSHOT_BLOCK_TIMEOUT
  const root = decodeRoot(cid, await fetchVerified(getter, cid, timeout, options))
  const elements: SnapshotElement[] = []
  for (const chunk of root.elementChunks) {
    elements.push(...decodeElementChunk(chunk, await fetchVerified(getter, chunk, timeout, options)))
  }
  const tombstones: SnapshotTombstone[] = []
  for (const chunk of root.tombstoneChunks) {
    tombstones.push(...decodeTombstoneChunk(chunk, await fetchVerified(getter, chunk, timeout, options)))
  }
  const nodes: SnapshotNode[] = []
  for (const chunk of root.nodeChunks) {
    nodes.push(...decodeNodeChunk(chunk, await fetchVerified(getter, chunk, timeout, options)))
  }
  if (elements.length !== root.elementCount || tombstones.length !== root.tombstoneCount || nodes.length !== root.nodeCount) {
    throw new InvalidSnapshotError(`Snapshot ${cid} records ${root.elementCount} elements, ${root.tombstoneCount} tombstones and ${root.nodeCount} nodes; its chunks hold ${elements.length}, ${tombstones.length} and ${nodes.length}`)
  }
  checkOrder(elements, 'elements')
  checkOrder(tombstones, 'tombstones')
  checkNodeOrder(nodes)
  return { root, elements, tombstones, nodes }
}

/**
 * What walks must know of the installs under way. A walk can settle a node
 * as merged by a snapshot (one of its elements is in the set) while an
 * install merges its element chunks, before the chunks holding its other
 * elements: the install merges those all the same (`settled`). And the
 * covered heads of the installs under way (block keys): a walk can meet
 * a covered head after its install merged the element chunks and before
 * the install's last batch makes it a head: the engine then settles it as
 * a head (see `EngineInit.mergedBySnapshot`), since the install skips a
 * covered head that is processed by then. Counted, as two installs may
 * name the same head.
 */
export class InstallingHeads {
  private readonly counts = new Map<string, number>()
  /** Installs merging their element chunks now */
  private merging = 0
  /**
   * Nodes a walk settled as merged by a snapshot while an install merged
   * its element chunks: their elements in later chunks are merged all the
   * same (the install skips the elements of a node processed here)
   */
  private readonly settledWhileMerging = new Set<string>()

  beginMerge (): void {
    this.merging++
  }

  endMerge (): void {
    if (--this.merging <= 0) {
      this.merging = 0
      this.settledWhileMerging.clear()
    }
  }

  /** Called for every node a walk settles as merged by a snapshot */
  settled (id: string): void {
    if (this.merging > 0) this.settledWhileMerging.add(id)
  }

  settledWhileMerged (id: string): boolean {
    return this.settledWhileMerging.has(id)
  }

  add (ids: string[]): void {
    for (const id of ids) this.counts.set(id, (this.counts.get(id) ?? 0) + 1)
  }

  delete (ids: string[]): void {
    for (const id of ids) {
      const count = (this.counts.get(id) ?? 0) - 1
      if (count > 0) this.counts.set(id, count)
      else this.counts.delete(id)
    }
  }

  has (id: string): boolean {
    return this.counts.has(id)
  }
}

export interface InstallSnapshotComponents extends SnapshotComponents {
  /** In trusted mode, throws `UntrustedSnapshotError` for a snapshot no current writer vouches for */
  checkSnapshot?(cid: CID): void
  /** Where the install registers its covered heads while it runs */
  installing?: InstallingHeads
}

/** Prefix of the records of installs under way (`z/i<block key of the root>`) */
export function installPrefix (layout: Layout): string {
  return `${layout.namespace}/z/i`
}

/**
 * Fetches and checks every block and record of a snapshot, one chunk at a
 * time (nothing but the root, the chunk at hand and one priority per node
 * id is held), and returns its root. Blocks fetched stay in the blockstore
 * (the install's second pass reads them from there).
 */
export async function verifySnapshot (getter: BlockGetter, cid: CID, options?: InstallSnapshotOptions): Promise<SnapshotRoot> {
  const timeout = options?.blockTimeout ?? DEFAULT_SNAPSHOT_BLOCK_TIMEOUT
  const root = decodeRoot(cid, await fetchVerified(getter, cid, timeout, options))
  const priorities = new Map<string, number>()
  let elements = 0
  let last: { key: string, id: string } | undefined
  for (const chunk of root.elementChunks) {
    const records = decodeElementChunk(chunk, await fetchVerified(getter, chunk, timeout, options))
    checkOrder(last == null ? records : [last, ...records], 'elements')
    for (const e of records) {
      const p = priorities.get(e.id)
      if (p != null && p !== e.priority) throw new InvalidSnapshotError(`Snapshot ${cid} gives the elements of node ${e.id} different priorities`)
      priorities.set(e.id, e.priority)
    }
    elements += records.length
    last = records[records.length - 1] ?? last
  }
  let tombstones = 0
  last = undefined
  for (const chunk of root.tombstoneChunks) {
    const records = decodeTombstoneChunk(chunk, await fetchVerified(getter, chunk, timeout, options))
    checkOrder(last == null ? records : [last, ...records], 'tombstones')
    tombstones += records.length
    last = records[records.length - 1] ?? last
  }
  let nodes = 0
  let lastNode: SnapshotNode | undefined
  for (const chunk of root.nodeChunks) {
    const records = decodeNodeChunk(chunk, await fetchVerified(getter, chunk, timeout, options))
    checkNodeOrder(lastNode == null ? records : [lastNode, ...records])
    nodes += records.length
    lastNode = records[records.length - 1] ?? lastNode
  }
  if (elements !== root.elementCount || tombstones !== root.tombstoneCount || nodes !== root.nodeCount) {
    throw new InvalidSnapshotError(`Snapshot ${cid} records ${root.elementCount} elements, ${root.tombstoneCount} tombstones and ${root.nodeCount} nodes; its chunks hold ${elements}, ${tombstones} and ${nodes}`)
  }
  return root
}

/**
 * Fetches, verifies and merges the snapshot `cid` into the store, chunk by
 * chunk: a first pass checks every block and record (a bad snapshot changes
 * nothing); an install record `z/i<root>` is written; each chunk is then
 * merged in its own batch (tombstones first); the covered nodes are marked
 * processed; a last batch makes the covered heads heads; the snapshot's
 * removal is applied; the record is deleted. A crash in between leaves
 * the record, and `resumeInstalls()` (run by `start()`) merges the
 * snapshot again (merging is idempotent), so after a reopen an install is
 * absent or complete. In trusted mode (`components.checkSnapshot`) a
 * snapshot no current writer announced is refused before anything is fetched.
 */
export async function installSnapshot (components: InstallSnapshotComponents, cid: CID, options?: InstallSnapshotOptions): Promise<InstallResult> {
  options?.signal?.throwIfAborted()
  components.checkSnapshot?.(cid)
  const root = await verifySnapshot(components.blockstore, cid, options)
  const headIds = root.heads.map(h => blockKey(h.cid))
  components.installing?.add(headIds)
  try {
    return await mergeSnapshot(components, cid, root, options)
  } finally {
    components.installing?.delete(headIds)
  }
}

/** The second pass of `installSnapshot`: merges a verified snapshot, chunk by chunk */
async function mergeSnapshot (components: InstallSnapshotComponents, cid: CID, root: SnapshotRoot, options?: InstallSnapshotOptions): Promise<InstallResult> {
  const { engine, datastore, blockstore, log } = components
  const timeout = options?.blockTimeout ?? DEFAULT_SNAPSHOT_BLOCK_TIMEOUT
  const record = new Key(`${installPrefix(engine.layout)}${blockKey(cid)}`, false)
  // the value keeps the root's CID (a block key keeps only its multihash)
  await datastore.put(record, cid.bytes, options)

  const before = engine.heads.all()
  const changed = new Set<string>()
  const mergeChunk = async (merge: (tx: WriteSet) => Promise<SetChange[]>): Promise<void> => {
    await engine.exclusive(async () => {
      const tx = new WriteSet(datastore)
      const changes = await merge(tx)
      await tx.commit(options)
      for (const change of changes) changed.add(change.key)
      if (changes.length > 0) engine.announceChanges(changes)
    })
  }
  let elementCount = 0
  components.installing?.beginMerge()
  try {
    for (const chunk of root.tombstoneChunks) {
      const tombstones = decodeTombstoneChunk(chunk, await fetchVerified(blockstore, chunk, timeout, options))
      await mergeChunk(async tx => engine.set.merge(tx, { elements: [], tombstones: tombstones.map(t => ({ key: t.key, id: t.id, value: new Uint8Array(0) })), priority: 0, dagName: '' }, '', false, options))
    }
    for (const chunk of root.elementChunks) {
      const elements = decodeElementChunk(chunk, await fetchVerified(blockstore, chunk, timeout, options))
      elementCount += elements.length
      // elements of one node share its id and priority: one merge per node
      const byNode = new Map<string, { priority: number, elements: SnapshotElement[] }>()
      for (const element of elements) {
        const node = byNode.get(element.id)
        if (node == null) byNode.set(element.id, { priority: element.priority, elements: [element] })
        else node.elements.push(element)
      }
      await mergeChunk(async tx => {
        const changes: SetChange[] = []
        for (const [id, node] of byNode) {
          // a node processed here: its element is here already, or tombstoned or removed here (never
          // re-added); unless a walk settled it while this merge ran (its elements here may be partial)
          if (await tx.has(engine.layout.processedKey(id), options) && components.installing?.settledWhileMerged(id) !== true) continue
          changes.push(...await engine.set.merge(tx, { elements: node.elements.map(e => ({ key: e.key, id: '', value: e.value })), tombstones: [], priority: node.priority, dagName: '' }, id, false, options))
        }
        return changes
      })
    }
  } finally {
    components.installing?.endMerge()
  }

  // every covered node is merged (its effects are in the snapshot): processed markers, in batches
  const cover = await readCover(blockstore, root, timeout, options)
  const coveredHeadIds = new Set(root.heads.map(h => blockKey(h.cid)))
  const nodes = [...cover.nodes].filter(([id]) => !coveredHeadIds.has(id))
  for (let i = 0; i < nodes.length; i += MARK_BATCH) {
    await engine.exclusive(async () => {
      const tx = new WriteSet(datastore)
      for (const [id, height] of nodes.slice(i, i + MARK_BATCH)) {
        const key = engine.layout.processedKey(id)
        // a node's priority is its own: the same marker as any already here
        if (height > 0) tx.put(key, encodePriority(height))
        else if (!(await tx.has(key, options))) tx.put(key, new Uint8Array(0))
      }
      await tx.commit(options)
    })
  }
  const pending = await engine.pendingBranches(options)
  // a covered head given up here lost its `w/` record: whether a processed node links to it is in its `g/` record
  const givenUpCovered = new Set((await engine.givenUp(options)).filter(b => b.covered === true).map(b => blockKey(b.cid)))

  const result = await engine.exclusive(async () => {
    const tx = new WriteSet(datastore)
    // walks and heads inside the covered history are settled by it
    for (const cid of pending) {
      const id = blockKey(cid)
      if (cover.nodes.has(id) && !coveredHeadIds.has(id)) tx.delete(engine.layout.pendingKey(id))
    }
    for (const head of engine.heads.all()) {
      const id = blockKey(head.cid)
      if (cover.nodes.has(id) && !coveredHeadIds.has(id)) engine.heads.remove(tx, head.dagName, head.cid)
    }
    let newHeads = 0
    for (const head of root.heads) {
      const id = blockKey(head.cid)
      const processedKey = engine.layout.processedKey(id)
      if (await tx.has(processedKey, options)) continue
      const pendingKey = engine.layout.pendingKey(id)
      const mark = await tx.get(pendingKey, options)
      // a pending record of 0 (COVERED) means a processed node links to it: not a head
      const covered = mark == null ? givenUpCovered.has(id) : mark[0] === 0
      if (!covered && engine.heads.get(head.dagName, head.cid) == null) {
        engine.heads.add(tx, { cid: head.cid, height: head.height, dagName: head.dagName })
        newHeads++
      }
      tx.put(processedKey, encodePriority(head.height))
      if (mark != null) tx.delete(pendingKey)
    }
    for (const head of root.heads) tx.put(coveredKey(engine.layout, head.cid), encodeHeight(head.height))
    await tx.commit(options)
    log('installed snapshot %c: %d elements, %d tombstones, %d nodes, %d new heads, %d keys changed', cid, elementCount, root.tombstoneCount, root.nodeCount, newHeads, changed.size)
    return { root, newHeads, changes: changed.size }
  })
  await applyRemoval(components, cid, cover, options)
  // the install is complete only now: a crash before this redoes all of it
  await datastore.delete(record, options)

  // heads this replica had before that lie below the covered heads are merged already
  // (those the snapshot lists as covered nodes were settled above)
  const covered = new Set([...root.heads.map(h => blockKey(h.cid)), ...cover.nodes.keys()])
  const byDag = new Map<string, Map<string, number>>()
  for (const head of before) {
    if (covered.has(blockKey(head.cid))) continue
    const targets = byDag.get(head.dagName) ?? new Map<string, number>()
    targets.set(blockKey(head.cid), head.height)
    byDag.set(head.dagName, targets)
  }
  // so are unfinished walks below them (a replica whose walk into compacted history failed), and
  // branches given up for lack of their blocks (compacted away on every peer); a covered node among
  // them is processed now, which settles its `g/` record
  const givenUp = (await engine.givenUp(options)).filter(b => !b.reason.startsWith(MALFORMED_REASON)).map(b => b.cid)
  for (const cid of [...await engine.pendingBranches(options), ...givenUp]) {
    if (covered.has(blockKey(cid))) continue
    for (const dagName of new Set(['', ...before.map(h => h.dagName)])) {
      const targets = byDag.get(dagName) ?? new Map<string, number>()
      targets.set(blockKey(cid), 1)
      byDag.set(dagName, targets)
    }
  }
  await settleBelowCovered({ engine, datastore, blockstore, log }, root, byDag, options)
  return result
}

/** Covered nodes marked processed per datastore batch */
const MARK_BATCH = 8192

/** Time (ms) `resumeInstalls()` waits for one block (they were all fetched before the install began) */
export const RESUME_BLOCK_TIMEOUT = 10_000

/**
 * Finishes installs a crash interrupted (their `z/i` records), each by
 * installing its snapshot again; one that cannot be finished (a block
 * gone) is logged and left for the next start. True when any was finished.
 */
export async function resumeInstalls (components: InstallSnapshotComponents, options?: AbortOptions): Promise<boolean> {
  const prefix = installPrefix(components.engine.layout)
  const cids: CID[] = []
  for await (const { key, value } of components.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<Pair>) {
    try {
      cids.push(CID.decode(value))
    } catch (err: any) {
      components.log.error('unreadable install record %s - %e', key, err)
    }
  }
  let resumed = false
  for (const cid of cids) {
    try {
      await installSnapshot(components, cid, { ...options, blockTimeout: RESUME_BLOCK_TIMEOUT })
      components.log('finished the interrupted install of snapshot %c', cid)
      resumed = true
    } catch (err: any) {
      options?.signal?.throwIfAborted()
      components.log.error('could not finish the interrupted install of snapshot %c - %e', cid, err)
    }
  }
  return resumed
}
