/**
 * The add-wins observed-remove set of go-ds-crdt, kept in a datastore.
 *
 * - An element is (key, id, value, priority): id is the block key of the
 *   DAG node whose delta added it. Tombstones name element ids.
 * - A key is present while it has an element that is not tombstoned.
 * - Its visible value is that of its live element with the highest priority;
 *   ties go to the byte-wise greatest value.
 *
 * The visible value and its priority are materialised under `s/k/<key>/{v,p}`
 * so a read is one datastore get. Element markers store their priority and
 * value, so a delete can reveal the next-best value without re-reading DAG
 * blocks (go-ds-crdt stores empty markers and refetches the blocks).
 *
 * - An element a snapshot removed (overwritten in the history the snapshot
 *   covers, see src/snapshot/removal.ts) moves from `s/s` to `s/r`: it is
 *   never visible again, and a delete still tombstones it until compaction
 *   forgets it, so replicas that have not applied that snapshot yet drop it
 *   too.
 *
 * The set knows nothing about DAGs: it merges deltas given an id.
 */

import { Key } from 'interface-datastore'
import { NotFoundError } from 'interface-store'
import * as varint from 'uint8-varint'
import { compare as uint8ArrayCompare } from 'uint8arrays/compare'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { CorruptStateError } from '../errors.js'
import { cleanKey, escapeSegment, unescapeSegment } from './layout.js'
import type { Layout } from './layout.js'
import type { StoreKey, WriteSet } from './write-set.js'
import type { DeltaElement, Delta } from '../codec/delta.js'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

const EMPTY = new Uint8Array(0)

/** A change to a key's visible value caused by a merge; `value` absent = deleted */
export interface SetChange {
  key: string
  value?: Uint8Array
}

interface Candidate {
  priority: number
  value: Uint8Array
}

export function encodePriority (priority: number): Uint8Array {
  return varint.encode(priority + 1)
}

export function decodePriority (bytes: Uint8Array): number {
  try {
    const p = varint.decode(bytes)
    if (p < 1) throw new Error('zero')
    return p - 1
  } catch (err: any) {
    throw new CorruptStateError(`Stored priority does not decode: ${err.message}`)
  }
}

export function encodeMarker (priority: number, value: Uint8Array): Uint8Array {
  const len = varint.encodingLength(priority)
  const out = new Uint8Array(len + value.byteLength)
  varint.encode(priority, out, 0)
  out.set(value, len)
  return out
}

export function decodeMarker (bytes: Uint8Array): { priority: number, value: Uint8Array } {
  try {
    const priority = varint.decode(bytes)
    return { priority, value: bytes.subarray(varint.encodingLength(priority)) }
  } catch (err: any) {
    throw new CorruptStateError(`Stored element does not decode: ${err.message}`)
  }
}

/** True when candidate `a` beats `b` under the priority, then byte-wise value rule */
function beats (a: Candidate, b: Candidate | undefined): boolean {
  if (b == null) return true
  if (a.priority !== b.priority) return a.priority > b.priority
  return uint8ArrayCompare(a.value, b.value) > 0
}

/** Deltas with fewer elements than this prefetch with point reads only */
const SCAN_MIN_KEYS = 16
/** Entries a prefetch scan may read beyond two per key before it gives up */
const SCAN_SLACK = 64
/** Merges that prefetch with point reads after a scan was cut short */
const SCAN_BACKOFF = 32

export class ORSet {
  private readonly store: Datastore
  private readonly layout: Layout
  /** Merges left before prefix scans are tried again, per kind of key */
  private readonly scanSkip = { priority: 0, tomb: 0 }

  constructor (store: Datastore, layout: Layout) {
    this.store = store
    this.layout = layout
  }

  /** The visible value of a key, with one datastore read */
  async get (key: string, options?: AbortOptions): Promise<Uint8Array> {
    try {
      return await this.store.get(this.layout.valueKey(key), options)
    } catch (err: any) {
      if (err.name === 'NotFoundError') {
        throw new NotFoundError(`Key not found: ${key}`)
      }
      throw err
    }
  }

  async has (key: string, options?: AbortOptions): Promise<boolean> {
    return this.store.has(this.layout.valueKey(key), options)
  }

  /**
   * Visible entries whose key starts with `prefix` (a plain string prefix,
   * as interface-datastore queries use), in the datastore's order.
   */
  async * entries (prefix: string | undefined, options?: AbortOptions): AsyncGenerator<Pair> {
    const start = byteLength(this.layout.keysPrefix)
    for await (const pair of this.store.query({ prefix: rawPrefix(this.layout.keysPrefix, prefix) }, options) as AsyncIterable<Pair>) {
      const key = userKey(pair.key, start)
      if (key != null) yield { key, value: pair.value }
    }
  }

  /** Visible keys whose key starts with `prefix` */
  async * keys (prefix: string | undefined, options?: AbortOptions): AsyncGenerator<Key> {
    const start = byteLength(this.layout.keysPrefix)
    for await (const raw of this.store.queryKeys({ prefix: rawPrefix(this.layout.keysPrefix, prefix) }, options) as AsyncIterable<Key>) {
      const key = userKey(raw, start)
      if (key != null) yield key
    }
  }

  /**
   * The tombstones a delete of `key` must carry: one per element of the key
   * that is not tombstoned yet, removed ones included (a replica that has
   * not applied the removing snapshot yet holds them live), ids in
   * ascending order.
   */
  async tombstonesFor (key: string, tx: WriteSet, options?: AbortOptions): Promise<DeltaElement[]> {
    const tombs: DeltaElement[] = []
    const ids = [...new Set([...await this.elementIds(key, tx, options), ...await this.idsUnder(this.layout.removedOf(key), tx, options)])].sort()
    for (const id of ids) {
      if (!(await tx.has(this.layout.tombId(key, id), options))) {
        tombs.push({ key, id, value: EMPTY })
      }
    }
    return tombs
  }

  /**
   * Merges a delta added by the node with block key `id`: tombstones first,
   * then elements. Writes go to `tx`; returns the keys whose visible value
   * changed. `fresh` skips the tombstone check for elements of a node that
   * nobody can have seen yet (a local write).
   */
  async merge (tx: WriteSet, delta: Delta, id: string, fresh: boolean, options?: AbortOptions): Promise<SetChange[]> {
    const changes = new Map<string, Uint8Array | undefined>()

    const tombed = new Set<string>()
    for (const tomb of delta.tombstones) {
      if (tomb.id === '') continue
      const key = cleanKey(tomb.key)
      tx.put(this.layout.tombId(key, tomb.id), EMPTY)
      tombed.add(key)
    }
    for (const key of tombed) {
      const change = await this.refresh(tx, key, options)
      if (change != null) changes.set(key, change.value)
    }

    // A node may put one key several times (go-ds-crdt batches do): it
    // counts as one element of that key carrying the byte-wise greatest of
    // its values, as go-ds-crdt's findBestValue reads it back. Keeping one
    // element per key makes the merge a function of the node and the set,
    // whatever order the values come in.
    const values = new Map<string, Uint8Array>()
    for (const element of delta.elements) {
      const key = cleanKey(element.key)
      const prev = values.get(key)
      if (prev == null || uint8ArrayCompare(element.value, prev) > 0) values.set(key, element.value)
    }

    // Read what the elements need (priorities, and tombstones unless fresh)
    // concurrently up front rather than one await at a time.
    const keys = [...values.keys()]
    const priorityKeys = keys.map(key => this.layout.priorityId(key))
    const tombKeys = fresh ? undefined : keys.map(key => this.layout.tombId(key, id))
    await Promise.all([
      this.prefetchRun(tx, priorityKeys, 'priority', options),
      tombKeys == null ? undefined : this.prefetchRun(tx, tombKeys, 'tomb', options)
    ])

    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]
      const value = values.get(key) as Uint8Array
      tx.put(this.layout.elemId(key, id), encodeMarker(delta.priority, value))
      if (tombKeys != null && await tx.has(tombKeys[i], options)) {
        continue
      }
      if (await this.beatsCurrent(key, priorityKeys[i], delta.priority, value, tx, options)) {
        this.setVisible(tx, key, { priority: delta.priority, value })
        changes.set(key, value)
      }
    }

    return [...changes].map(([key, value]) => value == null ? { key } : { key, value })
  }

  /**
   * Removes every element and tombstone that the given blocks added, then
   * recomputes the visible value of each key touched. Used to purge a DAG.
   */
  async purge (tx: WriteSet, entries: Map<string, Set<string>>, options?: AbortOptions): Promise<SetChange[]> {
    const changes: SetChange[] = []
    for (const [key, ids] of entries) {
      for (const id of ids) {
        tx.delete(this.layout.elemId(key, id))
        tx.delete(this.layout.removedId(key, id))
        tx.delete(this.layout.tombId(key, id))
      }
      const change = await this.refresh(tx, key, options)
      if (change != null) changes.push(change)
    }
    return changes
  }

  /**
   * Moves the given elements to the removed ones (see the file header) and
   * recomputes the visible value of each key touched. An element that is
   * not stored (or no longer) is skipped.
   */
  async remove (tx: WriteSet, elements: Array<{ key: string, id: string }>, options?: AbortOptions): Promise<SetChange[]> {
    const touched = new Set<string>()
    const keys = new Set(elements.map(e => e.key))
    await tx.prefetch([
      ...elements.map(({ key, id }) => this.layout.elemId(key, id)),
      ...[...keys].flatMap(key => [this.layout.priorityId(key), this.layout.valueId(key)])
    ], options)
    for (const { key, id } of elements) {
      const marker = await tx.get(this.layout.elemId(key, id), options)
      if (marker == null) continue
      tx.delete(this.layout.elemId(key, id))
      tx.put(this.layout.removedId(key, id), marker)
      if (touched.has(key)) continue
      // only an element equal to the visible one can change it (a removed element is usually beaten)
      const { priority, value } = decodeMarker(marker)
      const current = await this.current(key, tx, options)
      if (current != null && current.priority === priority && uint8ArrayEquals(current.value, value)) touched.add(key)
    }
    const changes: SetChange[] = []
    for (const key of touched) {
      const change = await this.refresh(tx, key, options)
      if (change != null) changes.push(change)
    }
    return changes
  }

  /**
   * Sets the visible value of `key` to its best live element; returns the
   * change (no value: deleted), or undefined when the visible value stays
   */
  private async refresh (tx: WriteSet, key: string, options?: AbortOptions): Promise<SetChange | undefined> {
    const best = await this.best(key, tx, options)
    const current = await this.current(key, tx, options)
    if (best == null) {
      if (current == null) return undefined
      tx.delete(this.layout.valueId(key))
      tx.delete(this.layout.priorityId(key))
      return { key }
    }
    if (current != null && current.priority === best.priority && uint8ArrayEquals(current.value, best.value)) return undefined
    this.setVisible(tx, key, best)
    return { key, value: best.value }
  }

  /** Block keys of every element stored for `key` */
  async elementIds (key: string, tx: WriteSet, options?: AbortOptions): Promise<string[]> {
    return this.idsUnder(this.layout.elemsOf(key), tx, options)
  }

  /** Block keys of the entries directly under `prefix` (a key's element or removed prefix) */
  private async idsUnder (prefix: string, tx: WriteSet, options?: AbortOptions): Promise<string[]> {
    const ids: string[] = []
    for (const { key: raw } of await tx.list(prefix, options)) {
      const rest = raw.slice(prefix.length)
      // entries of longer keys (e.g. "/a/b" under "/a") have a "/" in the rest
      if (rest.length === 0 || rest.includes('/')) continue
      ids.push('/' + rest)
    }
    return ids
  }

  private setVisible (tx: WriteSet, key: string, candidate: Candidate): void {
    tx.put(this.layout.valueId(key), candidate.value)
    tx.put(this.layout.priorityId(key), encodePriority(candidate.priority))
  }

  /**
   * Prefetches the priorities or tombstones of a delta's elements: with one
   * prefix scan when there are many (the keys of a batch are often a dense
   * run, and new keys have nothing to find), else with concurrent reads.
   * After a scan that had to be cut short, the next SCAN_BACKOFF merges
   * skip scanning.
   */
  private async prefetchRun (tx: WriteSet, keys: StoreKey[], kind: 'priority' | 'tomb', options?: AbortOptions): Promise<void> {
    if (keys.length >= SCAN_MIN_KEYS && this.scanSkip[kind] === 0) {
      // a key has two entries under the prefix (value and priority), or a few tombstones
      if (!(await tx.prefetchByScan(keys, keys.length * 2 + SCAN_SLACK, options))) {
        this.scanSkip[kind] = SCAN_BACKOFF
      }
      return
    }
    if (this.scanSkip[kind] > 0) this.scanSkip[kind]--
    await tx.prefetch(keys, kind === 'tomb' ? { ...options, existence: true } : options)
  }

  /**
   * `beats({ priority, value }, current(key))`, reading the current value
   * only when the priorities tie
   */
  private async beatsCurrent (key: string, priorityKey: StoreKey, priority: number, value: Uint8Array, tx: WriteSet, options?: AbortOptions): Promise<boolean> {
    const prio = await tx.get(priorityKey, options)
    if (prio == null) return true
    const current = decodePriority(prio)
    if (current !== priority) return priority > current
    const currentValue = await tx.get(this.layout.valueId(key), options)
    return uint8ArrayCompare(value, currentValue ?? EMPTY) > 0
  }

  private async current (key: string, tx: WriteSet, options?: AbortOptions): Promise<Candidate | undefined> {
    const prio = await tx.get(this.layout.priorityId(key), options)
    if (prio == null) return undefined
    const value = await tx.get(this.layout.valueId(key), options)
    return { priority: decodePriority(prio), value: value ?? EMPTY }
  }

  /** The best live element of a key, or undefined when every element is tombstoned */
  private async best (key: string, tx: WriteSet, options?: AbortOptions): Promise<Candidate | undefined> {
    const prefix = this.layout.elemsOf(key)
    let best: Candidate | undefined
    for (const { key: raw, value } of await tx.list(prefix, options)) {
      const rest = raw.slice(prefix.length)
      if (rest.length === 0 || rest.includes('/')) continue
      if (await tx.has(this.layout.tombId(key, '/' + rest), options)) continue
      const candidate = decodeMarker(value)
      if (beats(candidate, best)) best = candidate
    }
    return best
  }
}

/**
 * The stored-key prefix for a user's string prefix. A prefix ending in a
 * high surrogate is cut before it (its pair is escaped as one code point);
 * the caller's own prefix filter (BaseDatastore's) then drops the extras.
 */
function rawPrefix (base: string, prefix: string | undefined): string {
  if (prefix == null || prefix === '' || prefix === '/') return base + '/'
  const last = prefix.charCodeAt(prefix.length - 1)
  if (last >= 0xd800 && last <= 0xdbff) prefix = prefix.slice(0, -1)
  return base + escapeSegment(prefix)
}

const SLASH = 0x2f
const LETTER_V = 0x76
const ESCAPE_BYTE = 0x7f
const encoder = new TextEncoder()
const decoder = new TextDecoder()

function byteLength (s: string): number {
  return encoder.encode(s).byteLength
}

/**
 * The user key of a `<keysPrefix><key>/v` entry, undefined for any other
 * entry (the `/p` ones). Works on the key's bytes: no string round trip,
 * and the new Key is a view of them, as `new Key(string)` makes one of its
 * encoded string.
 */
function userKey (raw: Key, start: number): Key | undefined {
  const bytes = raw.uint8Array()
  const end = bytes.byteLength - 2
  if (end < start || bytes[end] !== SLASH || bytes[end + 1] !== LETTER_V) return undefined
  if (end === start) return new Key('/', false)
  const view = new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start)
  // escaped keys (see escapeSegment) hold U+007F; all others are kept as they are stored
  if (!view.includes(ESCAPE_BYTE)) return new Key(view, false)
  return new Key(unescapeSegment(decoder.decode(view)), false)
}
