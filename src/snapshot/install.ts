/**
 * Installing a snapshot: fetches the root and every chunk through the
 * blockstore (which fetches missing blocks from peers), checks each block
 * against its CID and every record, then merges the snapshot into the set
 * like any other node and makes its covered heads heads, in one atomic
 * datastore batch.
 *
 * Invariants:
 * - In trusted mode only a snapshot a current writer announced in a signed
 *   broadcast, or one this replica made, is installed (`UntrustedSnapshotError`).
 * - Nothing is written until every block is fetched and checked: a snapshot
 *   that is corrupt, truncated or out of order changes nothing
 *   (`InvalidSnapshotError`).
 * - The merge is the OR-set merge: tombstones first, then each element under
 *   its original id and priority, with the tombstone check on. It is
 *   commutative and idempotent, and a delete the replica already merged
 *   (or the snapshot carries) keeps its key deleted.
 * - A covered head this replica has already processed is left alone; any
 *   other becomes a head (unless a processed node links to it) and gets a
 *   processed marker with its height, so later walks stop at it.
 */

import toBuffer from 'it-to-buffer'
import { blockKey } from '../codec/block-key.js'
import { encodePriority } from '../crdt/or-set.js'
import { WriteSet } from '../crdt/write-set.js'
import { BlockFetchError, InvalidSnapshotError } from '../errors.js'
import { withTimeout } from '../utils.js'
import { coveredKey, coverWalk, encodeHeight } from './cover.js'
import { compareRecords, decodeElementChunk, decodeRoot, decodeTombstoneChunk, verifyBlock } from './format.js'
import type { SnapshotComponents } from './create.js'
import type { SnapshotElement, SnapshotRoot, SnapshotTombstone } from './format.js'
import type { SetChange } from '../crdt/or-set.js'
import type { BlockGetter } from '../engine/engine.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

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

/**
 * Fetches a block, bounded by `timeout`, and checks it against its CID.
 * A block that cannot be had is a `BlockFetchError`; bad bytes are an
 * `InvalidSnapshotError`.
 */
async function fetchVerified (getter: BlockGetter, cid: CID, timeout: number, options?: AbortOptions): Promise<Uint8Array> {
  let bytes: Uint8Array
  try {
    bytes = await withTimeout(options?.signal, timeout, async signal => toBuffer(getter.get(cid, { signal })))
  } catch (err: any) {
    options?.signal?.throwIfAborted()
    throw new BlockFetchError(`Could not fetch snapshot block ${cid}: ${err.message}`, { cause: err })
  }
  await verifyBlock(cid, bytes)
  return bytes
}

function checkOrder <T extends { key: string, id: string }> (records: T[], what: string): void {
  for (let i = 1; i < records.length; i++) {
    if (compareRecords(records[i - 1], records[i]) >= 0) {
      throw new InvalidSnapshotError(`Snapshot ${what} are not in strictly ascending order at ${records[i].key} ${records[i].id}`)
    }
  }
}

/** Fetches, checks and decodes a whole snapshot */
export async function readSnapshot (getter: BlockGetter, cid: CID, options?: InstallSnapshotOptions): Promise<{ root: SnapshotRoot, elements: SnapshotElement[], tombstones: SnapshotTombstone[] }> {
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
  if (elements.length !== root.elementCount || tombstones.length !== root.tombstoneCount) {
    throw new InvalidSnapshotError(`Snapshot ${cid} records ${root.elementCount} elements and ${root.tombstoneCount} tombstones; its chunks hold ${elements.length} and ${tombstones.length}`)
  }
  checkOrder(elements, 'elements')
  checkOrder(tombstones, 'tombstones')
  return { root, elements, tombstones }
}

export interface InstallSnapshotComponents extends SnapshotComponents {
  /** In trusted mode, throws `UntrustedSnapshotError` for a snapshot no current writer vouches for */
  checkSnapshot?(cid: CID): void
}

/**
 * Fetches, verifies and merges the snapshot `cid` into the store. In
 * trusted mode (`components.checkSnapshot`) a snapshot no current writer
 * announced is refused before anything is fetched
 */
export async function installSnapshot (components: InstallSnapshotComponents, cid: CID, options?: InstallSnapshotOptions): Promise<InstallResult> {
  options?.signal?.throwIfAborted()
  components.checkSnapshot?.(cid)
  const { engine, datastore, blockstore, log } = components
  const { root, elements, tombstones } = await readSnapshot(blockstore, cid, options)

  // elements of one node share its id and priority: one merge per node
  const byNode = new Map<string, { priority: number, elements: SnapshotElement[] }>()
  for (const element of elements) {
    const node = byNode.get(element.id)
    if (node == null) {
      byNode.set(element.id, { priority: element.priority, elements: [element] })
    } else if (node.priority !== element.priority) {
      throw new InvalidSnapshotError(`Snapshot ${cid} gives the elements of node ${element.id} different priorities`)
    } else {
      node.elements.push(element)
    }
  }

  const before = engine.heads.all()
  const result = await engine.exclusive(async () => {
    const tx = new WriteSet(datastore)
    const changed = new Map<string, SetChange>()
    const note = (changes: SetChange[]): void => {
      for (const change of changes) changed.set(change.key, change)
    }
    if (tombstones.length > 0) {
      note(await engine.set.merge(tx, { elements: [], tombstones: tombstones.map(t => ({ key: t.key, id: t.id, value: new Uint8Array(0) })), priority: 0, dagName: '' }, '', false, options))
    }
    for (const [id, node] of byNode) {
      note(await engine.set.merge(tx, { elements: node.elements.map(e => ({ key: e.key, id: '', value: e.value })), tombstones: [], priority: node.priority, dagName: '' }, id, false, options))
    }

    let newHeads = 0
    for (const head of root.heads) {
      const id = blockKey(head.cid)
      const processedKey = engine.layout.processedKey(id)
      if (await tx.has(processedKey, options)) continue
      const pendingKey = engine.layout.pendingKey(id)
      const mark = await tx.get(pendingKey, options)
      // a pending record of 0 (COVERED) means a processed node links to it: not a head
      const covered = mark != null && mark[0] === 0
      if (!covered && engine.heads.get(head.dagName, head.cid) == null) {
        engine.heads.add(tx, { cid: head.cid, height: head.height, dagName: head.dagName })
        newHeads++
      }
      tx.put(processedKey, encodePriority(head.height))
      if (mark != null) tx.delete(pendingKey)
    }
    for (const head of root.heads) tx.put(coveredKey(engine.layout, head.cid), encodeHeight(head.height))
    await tx.commit(options)
    const changes = [...changed.values()]
    engine.announceChanges(changes)
    log('installed snapshot %c: %d elements, %d tombstones, %d new heads, %d keys changed', cid, elements.length, tombstones.length, newHeads, changes.length)
    return { root, newHeads, changes: changes.length }
  })

  // heads this replica had before that lie below the covered heads are merged already
  const covered = new Set(root.heads.map(h => blockKey(h.cid)))
  const byDag = new Map<string, Map<string, number>>()
  for (const head of before) {
    if (covered.has(blockKey(head.cid))) continue
    const targets = byDag.get(head.dagName) ?? new Map<string, number>()
    targets.set(blockKey(head.cid), head.height)
    byDag.set(head.dagName, targets)
  }
  // so are unfinished walks below them (a replica whose walk into compacted history failed)
  for (const cid of await engine.pendingBranches(options)) {
    if (covered.has(blockKey(cid))) continue
    for (const dagName of new Set(['', ...before.map(h => h.dagName)])) {
      const targets = byDag.get(dagName) ?? new Map<string, number>()
      targets.set(blockKey(cid), 1)
      byDag.set(dagName, targets)
    }
  }
  for (const [dagName, targets] of byDag) {
    await coverWalk({ engine, datastore, blockstore, log }, dagName, targets, options)
  }
  return result
}
