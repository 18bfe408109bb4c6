/**
 * Making a snapshot: reads the set's element markers, tombstones, processed
 * markers and heads under the engine's merge lock (so no merge lands
 * half-way through), writes the chunks and the root to the blockstore,
 * applies the snapshot's removal here (the elements it leaves out move to
 * `s/r`, see removal.ts) and returns the root's CID.
 *
 * Invariants:
 * - The snapshot is the state at its covered heads: it is refused
 *   (`SnapshotNotReadyError`) while a walk is unfinished (a `w/` record
 *   exists), a branch is given up for lack of its blocks (a `g/` record
 *   whose reason is not a malformed block) or a head is not processed, as
 *   the set then lacks part of the history below the heads.
 * - Deterministic: records are sorted (see `compareRecords`) and chunked by
 *   size only; nothing depends on the replica, the clock or the datastore's
 *   iteration order. Replicas that merged the same nodes and applied the
 *   same snapshots produce the same root CID.
 * - Per key, only the live elements equal to the key's best (priority,
 *   then value) are listed; the others (overwritten) are removed here, in
 *   batches after the blocks are stored. No visible value changes: a
 *   removed element is beaten by a listed one.
 *
 * This slice holds the records in memory while sorting and encoding
 * (~100 bytes per record beyond the values); a streaming writer over
 * LevelDB's sorted iteration is planned with compaction.
 */

import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { blockKey } from '../codec/block-key.js'
import { escapeSegment, unescapeSegment } from '../crdt/layout.js'
import { decodeMarker, decodePriority, encodeMarker } from '../crdt/or-set.js'
import { MALFORMED_REASON } from '../engine/engine.js'
import { SnapshotNotReadyError } from '../errors.js'
import { chunkRecords, compareHeads, DEFAULT_CHUNK_BYTES, encodeBlock, encodeElementChunk, encodeNodeChunk, encodeRoot, encodeTombstoneChunk, snapshotIdOf, SNAPSHOT_VERSION } from './format.js'
import { markApplied } from './removal.js'
import type { SnapshotBlock, SnapshotElement, SnapshotHead, SnapshotNode, SnapshotTombstone } from './format.js'
import type { Engine } from '../engine/engine.js'
import type { DAGBlockstore } from '../interfaces.js'
import type { Logger } from '@libp2p/interface'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

export interface SnapshotComponents {
  engine: Engine
  datastore: Datastore
  blockstore: DAGBlockstore
  log: Logger
}

export interface CreateSnapshotOptions extends AbortOptions {
  /**
   * Target size of a chunk's records in bytes
   *
   * @default 262144
   */
  chunkBytes?: number
}

/** Internal: with `forget`, the elements the snapshot removes are deleted outright (compaction, with no known replica) */
export interface MakeSnapshotOptions extends CreateSnapshotOptions {
  forget?: boolean
  /** Called with the number of elements the snapshot removed here */
  onRemoved?(count: number): void
  /**
   * Called under the same hold of the merge lock as the collection, with
   * the processed nodes (block keys), the heads and the number of branches
   * given up as malformed collected (compaction's list of blocks to delete,
   * without a second scan)
   */
  onCollected?(collected: Readonly<Pick<Collected, 'nodes' | 'heads' | 'givenUp'>>): void
}

interface Collected {
  heads: SnapshotHead[]
  elements: SnapshotElement[]
  tombstones: SnapshotTombstone[]
  nodes: SnapshotNode[]
  /** Branches given up (all as malformed: any other refuses the snapshot) */
  givenUp: number
}

/** Splits a stored `<prefix><escaped key><id>` entry name into its user key and id */
export function parseEntry (raw: string, prefix: string): { key: string, id: string } {
  const rest = raw.slice(prefix.length)
  const cut = rest.lastIndexOf('/')
  const stored = rest.slice(0, cut)
  return { key: stored === '' ? '/' : unescapeSegment(stored), id: rest.slice(cut) }
}

async function collect (components: SnapshotComponents, options?: AbortOptions): Promise<Collected> {
  const { engine, datastore } = components
  const layout = engine.layout
  const pending = await engine.pendingBranches(options)
  if (pending.length > 0) {
    throw new SnapshotNotReadyError(`Cannot snapshot while ${pending.length} branch(es) are still being synced (first: ${pending[0]}); retry once the store has caught up`)
  }
  // a branch given up for lack of its blocks is history below the heads that the set lacks too (a
  // malformed one is junk, never part of the state); a snapshot announced from here would let others
  // install it, stop their walks at its heads and never fetch that branch, and compaction would delete
  // what leads to it
  const givenUpAll = await engine.givenUp(options)
  const givenUp = givenUpAll.filter(b => !b.reason.startsWith(MALFORMED_REASON))
  if (givenUp.length > 0) {
    throw new SnapshotNotReadyError(`Cannot snapshot while ${givenUp.length} branch(es) are given up (first: ${givenUp[0].cid}, ${givenUp[0].reason}); they are retried, and a snapshot another replica announces that covers them settles them`)
  }
  const heads = engine.heads.all().map(h => ({ dagName: h.dagName, cid: h.cid, height: h.height }))
  for (const head of heads) {
    if (!(await datastore.has(layout.processedKey(blockKey(head.cid)), options))) {
      throw new SnapshotNotReadyError(`Cannot snapshot while head ${head.cid} is not merged yet`)
    }
  }
  heads.sort(compareHeads)

  const tombstones: SnapshotTombstone[] = []
  const tombed = new Set<string>()
  for await (const key of datastore.queryKeys({ prefix: layout.tombsPrefix + '/' }, options)) {
    const raw = key.toString()
    tombed.add(raw.slice(layout.tombsPrefix.length))
    tombstones.push(parseEntry(raw, layout.tombsPrefix))
  }
  const elements: SnapshotElement[] = []
  for await (const pair of datastore.query({ prefix: layout.elemsPrefix + '/' }, options) as AsyncIterable<Pair>) {
    const raw = pair.key.toString()
    // a tombstoned element is left out: its tombstone says all a merge needs
    if (tombed.has(raw.slice(layout.elemsPrefix.length))) continue
    const { priority, value } = decodeMarker(pair.value)
    elements.push({ ...parseEntry(raw, layout.elemsPrefix), priority, value })
  }
  const nodes: SnapshotNode[] = []
  const processed = layout.processedPrefix
  for await (const pair of datastore.query({ prefix: processed + '/' }, options) as AsyncIterable<Pair>) {
    // a marker without a priority (older releases, cover walks) records height 0: unknown
    const height = pair.value.byteLength > 0 ? decodePriority(pair.value) : 0
    nodes.push({ id: pair.key.toString().slice(processed.length), height })
  }
  return { heads, elements, tombstones, nodes, givenUp: givenUpAll.length }
}

/**
 * Splits sorted elements into those a snapshot lists (per key, the live
 * elements equal to its best in priority and value) and those it removes
 * (overwritten: beaten by a listed one)
 */
export function splitOverwritten (elements: SnapshotElement[]): { kept: SnapshotElement[], removed: SnapshotElement[] } {
  const kept: SnapshotElement[] = []
  const removed: SnapshotElement[] = []
  for (let start = 0; start < elements.length;) {
    let end = start
    let best = elements[start]
    while (end < elements.length && elements[end].key === elements[start].key) {
      const e = elements[end]
      if (e.priority > best.priority || (e.priority === best.priority && uint8ArrayCompare(e.value, best.value) > 0)) best = e
      end++
    }
    for (let i = start; i < end; i++) {
      const e = elements[i]
      if (e.priority === best.priority && uint8ArrayEquals(e.value, best.value)) kept.push(e)
      else removed.push(e)
    }
    start = end
  }
  return { kept, removed }
}

function compareIds (a: string, b: string): number {
  if (a === b) return 0
  return a < b ? -1 : 1
}

/** Elements removed per datastore batch by the maker */
const REMOVE_BATCH = 8192

/**
 * The maker's removal, under the merge lock: each overwritten element's
 * marker moves to `s/r` (or, with `forget`, is deleted). Each is beaten by
 * a kept element of its key, so no visible value changes.
 */
async function removeCollected (components: SnapshotComponents, removed: SnapshotElement[], options: MakeSnapshotOptions): Promise<void> {
  const { datastore, engine } = components
  for (let i = 0; i < removed.length; i += REMOVE_BATCH) {
    options.signal?.throwIfAborted()
    const batch = datastore.batch()
    for (const e of removed.slice(i, i + REMOVE_BATCH)) {
      batch.delete(engine.layout.elemKey(e.key, e.id))
      if (options.forget !== true) batch.put(engine.layout.removedKey(e.key, e.id), encodeMarker(e.priority, e.value))
    }
    await batch.commit(options)
  }
}

/**
 * Sorts records in place in the order of `compareRecords`, escaping each
 * key once (not once per comparison)
 */
function sortRecords <T extends { key: string, id: string }> (records: T[]): void {
  const escaped = new Map<string, string>()
  for (const r of records) if (!escaped.has(r.key)) escaped.set(r.key, escapeSegment(r.key))
  records.sort((a, b) => {
    const ka = escaped.get(a.key) as string
    const kb = escaped.get(b.key) as string
    if (ka !== kb) return ka < kb ? -1 : 1
    if (a.id === b.id) return 0
    return a.id < b.id ? -1 : 1
  })
}

/**
 * Writes a snapshot of the current state to the blockstore, applies its
 * removal here and returns its root CID
 */
export async function createSnapshot (components: SnapshotComponents, options: CreateSnapshotOptions = {}): Promise<CID> {
  return makeSnapshot(components, options)
}

/** `createSnapshot`, with the options compaction uses */
export async function makeSnapshot (components: SnapshotComponents, options: MakeSnapshotOptions = {}): Promise<CID> {
  options.signal?.throwIfAborted()
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES
  const began = Date.now()
  // collected and removed under one hold of the merge lock: what is removed is beaten by what is
  // kept, and no merge can change that in between (a crash before the blocks are stored leaves a
  // removal no snapshot announces yet: the next snapshot made here, from this state, carries it)
  const { heads, tombstones, nodes, elements, removed } = await components.engine.exclusive(async () => {
    const collected = await collect(components, options)
    options.onCollected?.(collected)
    sortRecords(collected.elements)
    const split = splitOverwritten(collected.elements)
    await removeCollected(components, split.removed, options)
    return { ...collected, ...split, elements: split.kept }
  })
  sortRecords(tombstones)
  nodes.sort((a, b) => compareIds(a.id, b.id))

  const blocks: SnapshotBlock[] = []
  const chunked = async <T>(records: T[][], encode: (records: T[]) => unknown): Promise<CID[]> => {
    const cids: CID[] = []
    for (const chunk of records) {
      const block = await encodeBlock(encode(chunk))
      blocks.push(block)
      cids.push(block.cid)
    }
    return cids
  }
  const elementChunks = await chunked(chunkRecords(elements, chunkBytes), encodeElementChunk)
  const tombstoneChunks = await chunked(chunkRecords(tombstones, chunkBytes), encodeTombstoneChunk)
  const nodeChunks = await chunked(chunkRecords(nodes, chunkBytes), encodeNodeChunk)
  const root = await encodeBlock(encodeRoot({
    version: SNAPSHOT_VERSION,
    snapshotId: await snapshotIdOf(heads),
    heads,
    elementCount: elements.length,
    tombstoneCount: tombstones.length,
    nodeCount: nodes.length,
    elementChunks,
    tombstoneChunks,
    nodeChunks
  }))
  // chunks before the root: a root in the blockstore always has its chunks
  for (const block of blocks) {
    options.signal?.throwIfAborted()
    await components.blockstore.put(block.cid, block.bytes, options)
  }
  await components.blockstore.put(root.cid, root.bytes, options)
  options.onRemoved?.(removed.length)
  await markApplied(components, root.cid, options)
  components.log('snapshot %c: %d heads, %d elements (%d overwritten removed), %d tombstones, %d nodes in %d chunks (%d ms)', root.cid, heads.length, elements.length, removed.length, tombstones.length, nodes.length, blocks.length, Date.now() - began)
  return root.cid
}
