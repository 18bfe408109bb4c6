/**
 * What a snapshot covers below its heads. An installed snapshot is the
 * state at its covered heads, so every node reachable from them is already
 * merged, although this replica never processed it. Install records the
 * covered heads under `z/c<block key>` (value: varint height); when a node
 * that is not processed here shows up as a head (one this replica already
 * had, or one a stale replica announces), `coverWalk` walks down from the
 * covered heads of its DAG to its height and, if it is reached, marks every
 * node passed on the way processed (their effects are in the snapshot) and
 * drops them from the heads and from unfinished-walk records.
 *
 * Invariants:
 * - Only nodes reachable from a covered head are marked: a concurrent node
 *   that is not an ancestor is never reached and is merged as usual.
 * - Bounded: the walk visits nodes in decreasing height (heights strictly
 *   decrease along links), never below the lowest target, and at most
 *   `budget` nodes; past that, or when a block cannot be fetched, it stops,
 *   keeps what it marked, and a target not reached is merged as before (it
 *   then stays an extra head until the next write links it).
 * - A target met as a link of a walked node is reached without fetching its
 *   block (after a compaction no peer may have it); it gets an empty
 *   processed marker (priority unknown).
 * - What a walk marks is committed in one batch under the merge lock.
 *
 * When the blocks between a covered head and a node are gone from every
 * peer (compacted while this replica was away), no walk can reach the node;
 * its id then decides. A snapshot carries every live element and every
 * tombstone under the id of the node that added the element, and it is made
 * only with no walk unfinished, so a node whose id appears in a snapshot's
 * records lies at or below that snapshot's covered heads, with all its
 * ancestors, and its whole effect is in the snapshot:
 * - `mergedBySnapshot` asks the local set: a node not processed here whose
 *   element is in the set came from an installed snapshot (a node's merge
 *   and its processed marker are one batch, and nothing else writes an
 *   element under a node's id). The walker then marks it processed without
 *   merging it again, walking its links or making it a head. Tombstones do
 *   not count here: a delete is often merged before the node it deletes
 *   (walks go down from the newest), so a tombstone under an unprocessed
 *   node's id is no sign of a snapshot.
 * - `inSnapshotRecords` asks a snapshot's chunks: a head this replica had
 *   before an install, processed here (so its elements are in the set
 *   anyway), is below the covered heads when the snapshot names it.
 * A node that only deletes appears in no record; after an install one that
 * this replica had as a head is settled when the snapshot holds all it
 * deletes and all it links to (`settleNamedBySnapshot`), unless a cover
 * walk with every block at hand went down to its height without meeting
 * it (or no covered head is higher): then it is a concurrent node whose
 * deletes happen to be in the snapshot too, not merged by it, and it stays
 * a head as on every replica that merges it.
 */

import { Key } from 'interface-datastore'
import toBuffer from 'it-to-buffer'
import * as varint from 'uint8-varint'
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { decodeNode } from '../codec/dag-node.js'
import { cleanKey } from '../crdt/layout.js'
import { encodePriority } from '../crdt/or-set.js'
import { WriteSet } from '../crdt/write-set.js'
import { withTimeout } from '../utils.js'
import { readLocalBlock } from './fetch.js'
import { decodeElementChunk, decodeTombstoneChunk } from './format.js'
import type { SnapshotComponents } from './create.js'
import type { SnapshotRoot } from './format.js'
import type { DecodedNode } from '../codec/dag-node.js'
import type { Layout } from '../crdt/layout.js'
import type { BlockGetter } from '../engine/engine.js'
import type { Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** Nodes a cover walk visits at most */
export const DEFAULT_COVER_WALK_BUDGET = 10_000

/** Time (ms) a cover walk waits for one block */
export const DEFAULT_COVER_BLOCK_TIMEOUT = 30_000

/** A covered head recorded by an install */
export interface CoveredHead {
  cid: CID
  height: number
}

/** Prefix of the covered-head records */
export function coveredPrefix (layout: Layout): string {
  return `${layout.namespace}/z/c`
}

export function coveredKey (layout: Layout, cid: CID): Key {
  return new Key(`${coveredPrefix(layout)}${blockKey(cid)}`, false)
}

export function encodeHeight (height: number): Uint8Array {
  return varint.encode(height)
}

/** Every covered head recorded by installs */
export async function coveredHeads (components: SnapshotComponents, options?: AbortOptions): Promise<CoveredHead[]> {
  const prefix = coveredPrefix(components.engine.layout)
  const out: CoveredHead[] = []
  for await (const pair of components.datastore.query({ prefix: prefix + '/' }, options) as AsyncIterable<Pair>) {
    try {
      out.push({ cid: cidFromBlockKey(pair.key.toString().slice(prefix.length)), height: varint.decode(pair.value) })
    } catch (err: any) {
      components.log.error('unreadable covered-head record %s - %e', pair.key, err)
    }
  }
  return out
}

async function fetchNode (getter: BlockGetter, cid: CID, options?: AbortOptions): Promise<DecodedNode> {
  const bytes = await withTimeout(options?.signal, DEFAULT_COVER_BLOCK_TIMEOUT, async signal => toBuffer(getter.get(cid, { signal })))
  return decodeNode(cid, bytes)
}

export interface CoverWalkOptions extends AbortOptions {
  /** Nodes visited at most */
  budget?: number
}

/** What a cover walk found out about its targets (block keys) */
export interface CoverWalkResult {
  /** Targets reached from a covered head: below it, merged already */
  reached: Set<string>
  /**
   * Targets shown not to be below any covered head: the walk went down to
   * their height with every block at hand and did not meet them (or no
   * covered head is higher than they are). A node that adds nothing the
   * snapshot lacks may still be one of these (a concurrent delete of what
   * a covered node deleted too): it is not merged by the snapshot, and
   * stays a head like on every replica that merges it
   */
  notBelow: Set<string>
}

/**
 * Walks down from the covered heads of `dagName` looking for `targets`
 * (block keys, to heights); if any is reached, marks every node on the walk
 * down to the lowest target's height processed and drops those nodes from
 * the heads. Targets not reached are `notBelow` only when the walk was
 * complete (no budget or fetch cut it short).
 */
export async function coverWalk (components: SnapshotComponents, dagName: string, targets: Map<string, number>, options: CoverWalkOptions = {}): Promise<CoverWalkResult> {
  const found = new Set<string>()
  const notBelow = new Set<string>()
  const result = { reached: found, notBelow }
  if (targets.size === 0) return result
  const floor = Math.min(...targets.values())
  const covered = await coveredHeads(components, options)
  const starts = covered.filter(h => h.height > floor)
  // heights strictly decrease along links: a node is below no covered head lower than or as high as it
  // is (a covered head itself is the snapshot's, below or not)
  const coveredIds = new Set(covered.map(h => blockKey(h.cid)))
  const missedAll = (): void => { for (const id of targets.keys()) if (!found.has(id) && !coveredIds.has(id)) notBelow.add(id) }
  if (starts.length === 0) {
    missedAll()
    return result
  }
  const budget = options.budget ?? DEFAULT_COVER_WALK_BUDGET
  const { blockstore, engine, log } = components

  // max-heap by height, kept as a sorted list: the walk is narrow (DAG width)
  const queue: Array<{ cid: CID, node?: DecodedNode }> = starts.map(h => ({ cid: h.cid }))
  const startIds = new Set<string>(starts.map(h => blockKey(h.cid)))
  const seen = new Set<string>(startIds)
  // covered heads of earlier installs met as a link below another one: below it, so no head any more
  const belowAnother = new Set<string>()
  const visited: Array<{ id: string, node: DecodedNode }> = []
  const linked: CID[] = []
  let complete = false
  try {
    while (true) {
      if (queue.length === 0) {
        complete = true
        break
      }
      if (visited.length >= budget) {
        log('cover walk gave up after %d nodes', visited.length)
        break
      }
      const next = queue.shift() as { cid: CID, node?: DecodedNode }
      const node = next.node ?? await fetchNode(blockstore, next.cid, options)
      if (node.delta.dagName !== dagName) continue
      const id = blockKey(node.cid)
      visited.push({ id, node })
      // a covered head is reached only from above (another covered head), not by starting at it
      if (targets.has(id) && !startIds.has(id)) found.add(id)
      if (found.size === targets.size) break
      if (node.delta.priority <= floor) continue
      const links = node.links.filter(link => {
        const k = blockKey(link)
        if (startIds.has(k)) {
          belowAnother.add(k)
          if (targets.has(k)) found.add(k)
        }
        if (seen.has(k)) return false
        seen.add(k)
        // a target met as a link is reached without its block (which may be gone from every peer)
        if (targets.has(k)) {
          found.add(k)
          linked.push(link)
          return false
        }
        return true
      })
      if (found.size === targets.size) break
      const children = await Promise.all(links.map(async link => ({ cid: link, node: await fetchNode(blockstore, link, options) })))
      for (const child of children) {
        if ((child.node.delta.priority) < floor) continue
        queue.push(child)
      }
      queue.sort((a, b) => (b.node?.delta.priority ?? Infinity) - (a.node?.delta.priority ?? Infinity))
    }
  } catch (err: any) {
    options.signal?.throwIfAborted()
    log('cover walk could not fetch a block below a covered head - %e', err)
  }
  if (complete) missedAll()
  // every node walked is below a covered head, hence merged: marking it is sound whatever was found
  if (visited.length === 0 && linked.length === 0) return result

  await engine.exclusive(async () => {
    const tx = new WriteSet(components.datastore)
    for (const { id, node } of visited) {
      const processed = engine.layout.processedKey(id)
      if (!(await tx.has(processed, options))) tx.put(processed, encodePriority(node.delta.priority))
      const pending = engine.layout.pendingKey(id)
      if (await tx.has(pending, options)) tx.delete(pending)
      if (engine.heads.get(dagName, node.cid) != null && (!startIds.has(id) || belowAnother.has(id))) {
        engine.heads.remove(tx, dagName, node.cid)
      }
    }
    for (const cid of linked) await settleNode(engine, tx, cid, dagName, options)
    await tx.commit(options)
  })
  log('cover walk marked %d nodes below covered heads processed (%d of %d targets reached)', visited.length, found.size, targets.size)
  return result
}

/** Reads the datastore's records, staged ones included when given a WriteSet */
interface RecordReader {
  has(key: Key, options?: AbortOptions): Promise<boolean>
}

/**
 * Whether `node`, not processed here, is merged already through an
 * installed snapshot: one of the elements it adds is in the set under its
 * id (see the header; a tombstone is no proof). Nodes that add nothing, or
 * whose elements were all deleted, answer false.
 */
export async function mergedBySnapshot (layout: Layout, reader: RecordReader, node: DecodedNode, options?: AbortOptions): Promise<boolean> {
  const id = blockKey(node.cid)
  for (const element of node.delta.elements) {
    let key: string
    try {
      key = cleanKey(element.key)
    } catch {
      continue
    }
    if (await reader.has(layout.elemKey(key, id), options)) return true
  }
  return false
}

/** What a scan of a snapshot's records found */
export interface NamedInSnapshot {
  /** ids named as the node that added an element, live or tombstoned */
  ids: Set<string>
  /** tombstones (`key` NUL `id`) among those asked for */
  tombstones: Set<string>
}

/** A tombstone as `inSnapshotRecords` takes and returns it */
export function tombstoneEntry (key: string, id: string): string {
  return `${key}\u0000${id}`
}

/**
 * Which of `ids` a snapshot's records name (as the node that added an
 * element, live or tombstoned), and which of `tombstones` it carries,
 * reading its chunks one at a time from local blocks only (an installed,
 * passed or compacted snapshot's chunks are here; a chunk that is not
 * names nothing, and nothing waits on the network)
 */
export async function inSnapshotRecords (getter: BlockGetter, root: SnapshotRoot, ids: Set<string>, options?: AbortOptions, tombstones = new Set<string>()): Promise<NamedInSnapshot> {
  const found: NamedInSnapshot = { ids: new Set(), tombstones: new Set() }
  const done = (): boolean => found.ids.size === ids.size && found.tombstones.size === tombstones.size
  const read = async (chunk: CID): Promise<Uint8Array | undefined> => {
    try {
      return await readLocalBlock(getter, chunk, options)
    } catch (err: any) {
      options?.signal?.throwIfAborted()
      return undefined
    }
  }
  for (const chunk of root.elementChunks) {
    if (found.ids.size === ids.size) break
    const bytes = await read(chunk)
    if (bytes == null) continue
    for (const record of decodeElementChunk(chunk, bytes)) if (ids.has(record.id)) found.ids.add(record.id)
  }
  for (const chunk of root.tombstoneChunks) {
    if (done()) break
    const bytes = await read(chunk)
    if (bytes == null) continue
    for (const record of decodeTombstoneChunk(chunk, bytes)) {
      if (ids.has(record.id)) found.ids.add(record.id)
      const entry = tombstoneEntry(record.key, record.id)
      if (tombstones.has(entry)) found.tombstones.add(entry)
    }
  }
  return found
}

/** Local nodes gathered below the targets at most, to learn whether a snapshot covers them */
export const DEFAULT_SETTLE_BUDGET = 1_000

/** A local node as `settleNamedBySnapshot` sees it */
interface LocalNode {
  links: string[]
  /** It adds elements */
  puts: boolean
  /** Its tombstones, as `tombstoneEntry` writes them */
  tombstones: string[]
}

/** Reads a block only when it is stored here; undefined when it is not (or does not decode) */
async function readLocalNode (getter: BlockGetter, cid: CID, options?: AbortOptions): Promise<DecodedNode | undefined> {
  try {
    const bytes = await readLocalBlock(getter, cid, options)
    return bytes == null ? undefined : decodeNode(cid, bytes)
  } catch (err: any) {
    options?.signal?.throwIfAborted()
    return undefined
  }
}

/**
 * After an install, for the heads this replica had before and the
 * unfinished walks that no cover walk reached (the blocks between are gone
 * from every peer): settles each that the snapshot covers (drops it from
 * the heads, marks it processed, removes its unfinished-walk record).
 * `targets` maps block keys to DAG names. A node is covered when
 * - it is a covered head, or the snapshot's records name it (see the
 *   header: then it and its ancestors are below the covered heads); or
 * - it adds no element, the snapshot carries every tombstone it carries,
 *   and every node it links to is covered (a delete made here while away
 *   from history the snapshot also holds): dropping it loses nothing, as
 *   its effect and its ancestors' are in the snapshot.
 * Nodes are read from local blocks only, at most `DEFAULT_SETTLE_BUDGET` of
 * them below the targets; one that is not here is not covered (unless
 * named). Returns how many targets it settled.
 */
export async function settleNamedBySnapshot (components: SnapshotComponents, root: SnapshotRoot, targets: Map<string, string>, options?: AbortOptions): Promise<number> {
  if (targets.size === 0) return 0
  const { engine, datastore, blockstore, log } = components
  const tops = new Set(root.heads.map(h => blockKey(h.cid)))
  // gather the local nodes below the targets, down to covered heads
  const nodes = new Map<string, LocalNode>()
  const queue = [...targets.keys()]
  const queued = new Set(queue)
  while (queue.length > 0 && nodes.size < DEFAULT_SETTLE_BUDGET) {
    const id = queue.shift() as string
    if (tops.has(id)) continue
    const node = await readLocalNode(blockstore, cidFromBlockKey(id), options)
    if (node == null) continue
    const links = node.links.map(link => blockKey(link))
    const tombstones: string[] = []
    for (const t of node.delta.tombstones) {
      try {
        tombstones.push(tombstoneEntry(cleanKey(t.key), t.id))
      } catch {
        tombstones.push('')
      }
    }
    nodes.set(id, { links, puts: node.delta.elements.length > 0, tombstones })
    for (const link of links) {
      if (queued.has(link)) continue
      queued.add(link)
      queue.push(link)
    }
  }
  const named = await inSnapshotRecords(blockstore, root, new Set(queued), options, new Set([...nodes.values()].flatMap(n => n.tombstones)))
  const memo = new Map<string, boolean>()
  const covered = (id: string): boolean => {
    const known = memo.get(id)
    if (known != null) return known
    memo.set(id, false)
    const node = nodes.get(id)
    const result = tops.has(id) || named.ids.has(id) || (node != null && !node.puts &&
      node.tombstones.every(t => named.tombstones.has(t)) && node.links.every(covered))
    memo.set(id, result)
    return result
  }
  const settled = [...targets.keys()].filter(covered)
  if (settled.length === 0) return 0
  await engine.exclusive(async () => {
    const tx = new WriteSet(datastore)
    for (const id of settled) await settleNode(engine, tx, cidFromBlockKey(id), targets.get(id) ?? '', options)
    await tx.commit(options)
  })
  log('%d heads or unfinished walks settled below the covered heads of the snapshot (named by it, or deletes it holds)', settled.length)
  return settled.length
}

/**
 * After an install: settles the nodes in `byDag` (per DAG name, block key
 * to height: the heads this replica had before, and its unfinished walks)
 * that lie below the snapshot's covered heads, first by cover walks, then,
 * for those no walk reached (the blocks between are gone), by the
 * snapshot's records (`settleNamedBySnapshot`)
 */
export async function settleBelowCovered (components: SnapshotComponents, root: SnapshotRoot, byDag: Map<string, Map<string, number>>, options?: AbortOptions): Promise<void> {
  const reached = new Set<string>()
  // targets a walk of their DAG could not decide (cut short): left to the records. What a complete
  // walk did not reach is concurrent to the snapshot, and the records cannot settle it; a target
  // listed under several DAGs (an unfinished walk) is left to them when any walk could not decide
  const unreached = new Map<string, string>()
  for (const [dagName, targets] of byDag) {
    const walk = await coverWalk(components, dagName, targets, options)
    for (const id of walk.reached) reached.add(id)
    for (const id of targets.keys()) if (!walk.reached.has(id) && !walk.notBelow.has(id) && !unreached.has(id)) unreached.set(id, dagName)
  }
  for (const id of reached) unreached.delete(id)
  components.log('below the covered heads: %s reached by walks, %s left to the records', [...reached].join(' '), [...unreached.keys()].join(' '))
  await settleNamedBySnapshot(components, root, unreached, options)
}

/**
 * Records a node below covered heads as merged, in `tx`: a processed marker
 * (an empty one: its priority is unknown here, as releases that stored none
 * wrote) unless it has one, no walk record, and no head of `dagName`
 */
async function settleNode (engine: SnapshotComponents['engine'], tx: WriteSet, cid: CID, dagName: string, options?: AbortOptions): Promise<void> {
  const id = blockKey(cid)
  const processed = engine.layout.processedKey(id)
  if (!(await tx.has(processed, options))) tx.put(processed, new Uint8Array(0))
  const pending = engine.layout.pendingKey(id)
  if (await tx.has(pending, options)) tx.delete(pending)
  if (engine.heads.get(dagName, cid) != null) engine.heads.remove(tx, dagName, cid)
}
