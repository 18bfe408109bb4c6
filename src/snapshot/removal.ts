/**
 * A snapshot as a replicated removal (issue #16).
 *
 * A snapshot S covers a set of nodes C(S) (its node chunks: every node whose
 * effects it holds) and lists, per key, only the live elements equal to the
 * key's best in priority and value. Its *removal* is: every element added by
 * a node of C(S) that S does not list is removed. That is a function of S's
 * content alone, and an ordinary observed-remove (commutative, idempotent),
 * so every replica applies it, whatever it holds: the maker when it makes
 * S, a replica with history when it passes S (has merged every covered
 * head), a replica that installs S after installing it. A removed element
 * moves from `s/s` to `s/r` (or-set.ts): never visible again, and still
 * tombstoned by this replica's deletes, so a replica that has not applied S
 * yet drops it too. Compaction forgets removed elements (their `s/r`
 * entries) only once every known replica announces a snapshot whose removal
 * includes them (compaction.ts); their nodes' processed markers stay, so a
 * covered node that arrives again is skipped, and an install never re-adds
 * an element of a node processed here (install.ts).
 *
 * Invariants:
 * - Only elements of covered nodes that S does not list are removed; an
 *   element of a node outside C(S) (concurrent with S, or newer) is never
 *   touched, whatever its priority.
 * - Applying S twice changes nothing (`z/a<root>` records it, written after
 *   the last batch; an interrupted application is simply redone).
 * - Each batch holds the merge lock; a removed element that was a key's
 *   visible value (possible only on a replica that lacked what beat it)
 *   makes the key show its next best element.
 */

import { Key } from 'interface-datastore'
import { blockKey } from '../codec/block-key.js'
import { WriteSet } from '../crdt/write-set.js'
import { parseEntry } from './create.js'
import { fetchVerified } from './fetch.js'
import { decodeElementChunk, decodeNodeChunk } from './format.js'
import type { SnapshotComponents } from './create.js'
import type { SnapshotHead, SnapshotRoot } from './format.js'
import type { Layout } from '../crdt/layout.js'
import type { BlockGetter } from '../engine/engine.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** Elements removed per datastore batch */
export const REMOVE_BATCH = 4096

/** What a snapshot covers and lists, as read from its chunks */
export interface SnapshotCover {
  /** Block key to height (0: unknown) of every covered node */
  nodes: Map<string, number>
  /** User key to the ids of the elements listed for it */
  kept: Map<string, Set<string>>
}

/** Reads the node and element chunks of a snapshot (each block fetched and checked) */
export async function readCover (getter: BlockGetter, root: SnapshotRoot, timeout: number, options?: AbortOptions): Promise<SnapshotCover> {
  const nodes = new Map<string, number>()
  for (const chunk of root.nodeChunks) {
    for (const node of decodeNodeChunk(chunk, await fetchVerified(getter, chunk, timeout, options))) nodes.set(node.id, node.height)
  }
  const kept = new Map<string, Set<string>>()
  for (const chunk of root.elementChunks) {
    for (const e of decodeElementChunk(chunk, await fetchVerified(getter, chunk, timeout, options))) {
      const ids = kept.get(e.key) ?? new Set<string>()
      ids.add(e.id)
      kept.set(e.key, ids)
    }
  }
  return { nodes, kept }
}

function appliedKey (layout: Layout, cid: CID): Key {
  return new Key(`${layout.namespace}/z/a${blockKey(cid)}`, false)
}

/** Whether this replica has applied the removal of snapshot `cid` */
export async function isApplied (components: SnapshotComponents, cid: CID, options?: AbortOptions): Promise<boolean> {
  return components.datastore.has(appliedKey(components.engine.layout, cid), options)
}

/** Records that the removal of snapshot `cid` is applied here */
export async function markApplied (components: SnapshotComponents, cid: CID, options?: AbortOptions): Promise<void> {
  await components.datastore.put(appliedKey(components.engine.layout, cid), new Uint8Array(0), options)
}

/** Removes the given elements, `REMOVE_BATCH` per batch, each batch under the merge lock */
export async function removeElements (components: SnapshotComponents, elements: Array<{ key: string, id: string }>, options?: AbortOptions): Promise<void> {
  const { engine, datastore } = components
  for (let i = 0; i < elements.length; i += REMOVE_BATCH) {
    options?.signal?.throwIfAborted()
    const batch = elements.slice(i, i + REMOVE_BATCH)
    await engine.exclusive(async () => {
      const tx = new WriteSet(datastore)
      const changes = await engine.set.remove(tx, batch, options)
      await tx.commit(options)
      if (changes.length > 0) engine.announceChanges(changes)
    })
  }
}

/** The elements stored live here that `cover`'s snapshot removes */
async function doomed (components: SnapshotComponents, cover: SnapshotCover, options?: AbortOptions): Promise<Array<{ key: string, id: string }>> {
  const { datastore, engine } = components
  const prefix = engine.layout.elemsPrefix
  const out: Array<{ key: string, id: string }> = []
  for await (const raw of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
    const entry = parseEntry(raw.toString(), prefix)
    if (cover.nodes.has(entry.id) && cover.kept.get(entry.key)?.has(entry.id) !== true) out.push(entry)
  }
  return out
}

/**
 * Applies the removal of snapshot `cid` (covering and listing `cover`)
 * here, unless it was applied already; returns the elements removed
 */
export async function applyRemoval (components: SnapshotComponents, cid: CID, cover: SnapshotCover, options?: AbortOptions): Promise<number> {
  if (await isApplied(components, cid, options)) return 0
  const elements = await doomed(components, cover, options)
  await removeElements(components, elements, options)
  await markApplied(components, cid, options)
  if (elements.length > 0) components.log('applied snapshot %c: %d overwritten elements removed', cid, elements.length)
  return elements.length
}

/**
 * Why the snapshot of `cover` does not include every removal this replica
 * announces (those of the snapshot it passed, covering `passedHeads`), or
 * undefined when it does: it must cover those heads, and list no element
 * that is removed here. A replica announces only a snapshot that includes
 * its removals, so a replica that relies on one (it forgot the elements, or
 * joined without them) keeps announcing one that carries it.
 */
export async function notIncluding (components: SnapshotComponents, cover: SnapshotCover, passedHeads: SnapshotHead[], options?: AbortOptions): Promise<string | undefined> {
  for (const head of passedHeads) {
    if (!cover.nodes.has(blockKey(head.cid))) return `it does not cover head ${head.cid} of the snapshot passed here`
  }
  const { datastore, engine } = components
  for (const [key, ids] of cover.kept) {
    for (const id of ids) {
      if (await datastore.has(engine.layout.elemKey(key, id), options)) continue
      if (await datastore.has(engine.layout.tombKey(key, id), options)) continue
      return `it lists element ${id} of ${key}, which is removed here`
    }
  }
  return undefined
}

/**
 * The removed-element entries (`s/r`) compaction may forget once every
 * known replica announces the snapshot of `cover`: those of its covered
 * nodes it does not list
 */
export async function forgettable (components: SnapshotComponents, cover: SnapshotCover, options?: AbortOptions): Promise<Key[]> {
  const { datastore, engine } = components
  const prefix = engine.layout.removedPrefix
  const out: Key[] = []
  for await (const raw of datastore.queryKeys({ prefix: prefix + '/' }, options)) {
    const entry = parseEntry(raw.toString(), prefix)
    if (cover.nodes.has(entry.id) && cover.kept.get(entry.key)?.has(entry.id) !== true) out.push(raw)
  }
  return out
}
