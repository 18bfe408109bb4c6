/**
 * Batches: puts and deletes gathered into one delta, so one DAG node and one
 * broadcast carry them all. A batch whose delta would grow past
 * `maxBatchDeltaSize` commits what it has in the background and goes on;
 * `commit()` waits for those parts and writes the rest, in order.
 */

import { elementSize } from '../codec/delta.js'
import { InvalidValueError, ValueTooLargeError } from '../errors.js'
import type { Delta, DeltaElement } from '../codec/delta.js'
import type { Batch, Key } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** What a batch holds for one key: the value to put and/or a delete of what was there */
export interface KeyOp {
  value?: Uint8Array
  remove: boolean
}

/** Writes one delta made of the given operations */
export type OpsWriter = (ops: Map<string, KeyOp>, dagName: string, options?: AbortOptions) => Promise<void>

/** Options for `store.batch()` */
export interface BatchOptions {
  /** Write to this named DAG instead of the default one */
  dagName?: string
}

/** The size a tombstone is counted at before its id is known (a sha2-256 block key) */
const TOMBSTONE_ID_ESTIMATE = '/CIQ' + 'A'.repeat(52)

/** The size of a delta with no elements: priority and DAG name */
export function deltaOverhead (dagName: string): number {
  return 11 + (dagName === '' ? 0 : 2 + new TextEncoder().encode(dagName).byteLength)
}

/**
 * Checks a value and returns the encoded size of its element, throwing
 * `InvalidValueError` / `ValueTooLargeError`.
 */
export function checkedElementSize (key: string, value: unknown, maxDeltaSize: number, dagName: string): number {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidValueError(`Value for ${key} must be a Uint8Array, got ${value === null ? 'null' : typeof value}`)
  }
  const size = elementSize(key, '', value)
  if (size + deltaOverhead(dagName) > maxDeltaSize) {
    throw new ValueTooLargeError(`Value for ${key} makes a ${size} byte delta, over maxBatchDeltaSize (${maxDeltaSize})`)
  }
  return size
}

/** Accumulates operations into deltas of bounded size */
export class DeltaBuilder {
  private ops = new Map<string, KeyOp>()
  private sizes = new Map<string, number>()
  private size: number
  private readonly maxSize: number
  private readonly dagName: string

  constructor (maxSize: number, dagName: string) {
    this.maxSize = maxSize
    this.dagName = dagName
    this.size = deltaOverhead(dagName)
  }

  get empty (): boolean {
    return this.ops.size === 0
  }

  /**
   * Adds a put; returns the operations to write first when this one would
   * push the delta past the size limit.
   */
  put (key: string, value: unknown): Map<string, KeyOp> | undefined {
    const size = checkedElementSize(key, value, this.maxSize, this.dagName)
    const prev = this.ops.get(key)
    return this.add(key, { value: value as Uint8Array, remove: prev?.remove ?? false }, size + (prev?.remove === true ? this.tombSize(key) : 0))
  }

  /** Adds a delete; returns operations to write first, as `put` does */
  delete (key: string): Map<string, KeyOp> | undefined {
    return this.add(key, { remove: true }, this.tombSize(key))
  }

  /** Takes the operations gathered so far */
  take (): Map<string, KeyOp> {
    const ops = this.ops
    this.ops = new Map()
    this.sizes = new Map()
    this.size = deltaOverhead(this.dagName)
    return ops
  }

  private tombSize (key: string): number {
    return elementSize(key, TOMBSTONE_ID_ESTIMATE, new Uint8Array(0))
  }

  private add (key: string, op: KeyOp, size: number): Map<string, KeyOp> | undefined {
    let sealed: Map<string, KeyOp> | undefined
    const prevSize = this.sizes.get(key) ?? 0
    if (this.size - prevSize + size > this.maxSize && this.ops.size > 0 && !(this.ops.size === 1 && this.ops.has(key))) {
      sealed = this.take()
    }
    this.size += size - (this.sizes.get(key) ?? 0)
    this.sizes.set(key, size)
    this.ops.set(key, op)
    return sealed
  }
}

/** The batch returned by `store.batch()` */
export class CRDTBatch implements Batch {
  private readonly builder: DeltaBuilder
  private readonly write: OpsWriter
  private readonly dagName: string
  private readonly keyString: (key: Key) => string
  private chain: Promise<void> = Promise.resolve()
  private failure?: Error

  constructor (write: OpsWriter, keyString: (key: Key) => string, maxSize: number, dagName: string) {
    this.write = write
    this.keyString = keyString
    this.dagName = dagName
    this.builder = new DeltaBuilder(maxSize, dagName)
  }

  put (key: Key, value: Uint8Array): void {
    this.enqueue(this.builder.put(this.keyString(key), value))
  }

  delete (key: Key): void {
    this.enqueue(this.builder.delete(this.keyString(key)))
  }

  async commit (options?: AbortOptions): Promise<void> {
    this.enqueue(this.builder.take(), options)
    await this.chain
    if (this.failure != null) {
      const failure = this.failure
      this.failure = undefined
      throw failure
    }
  }

  private enqueue (ops: Map<string, KeyOp> | undefined, options?: AbortOptions): void {
    if (ops == null || ops.size === 0) return
    this.chain = this.chain.then(async () => {
      if (this.failure != null) return
      await this.write(ops, this.dagName, options)
    }).catch((err: Error) => {
      this.failure ??= err
    })
  }
}

/**
 * Splits a delta into deltas that each encode within `maxSize` bytes, in
 * order. A key's tombstones and element stay in one delta whenever they fit
 * in one; a key whose tombstones alone outgrow the limit is spread over
 * several, its element (if any) in the last. Used for local writes: a delete
 * tombstones every live element of its key, which only the merge lock's
 * view of the set knows, so only the engine can size it.
 */
export function splitDelta (delta: Delta, maxSize: number): Delta[] {
  const overhead = deltaOverhead(delta.dagName)
  const groups = new Map<string, { tombstones: DeltaElement[], elements: DeltaElement[], size: number }>()
  const group = (key: string): { tombstones: DeltaElement[], elements: DeltaElement[], size: number } => {
    let g = groups.get(key)
    if (g == null) {
      g = { tombstones: [], elements: [], size: 0 }
      groups.set(key, g)
    }
    return g
  }
  let total = overhead
  for (const tomb of delta.tombstones) {
    const g = group(tomb.key)
    const size = elementSize(tomb.key, tomb.id, tomb.value)
    g.tombstones.push(tomb)
    g.size += size
    total += size
  }
  for (const element of delta.elements) {
    const g = group(element.key)
    const size = elementSize(element.key, element.id, element.value)
    g.elements.push(element)
    g.size += size
    total += size
  }
  if (total <= maxSize) return [delta]

  const out: Delta[] = []
  let current: Delta = { elements: [], tombstones: [], priority: delta.priority, dagName: delta.dagName }
  let size = overhead
  const seal = (): void => {
    if (current.elements.length === 0 && current.tombstones.length === 0) return
    out.push(current)
    current = { elements: [], tombstones: [], priority: delta.priority, dagName: delta.dagName }
    size = overhead
  }
  const add = (list: 'elements' | 'tombstones', item: DeltaElement): void => {
    const itemSize = elementSize(item.key, item.id, item.value)
    if (size + itemSize > maxSize) seal()
    current[list].push(item)
    size += itemSize
  }
  for (const g of groups.values()) {
    if (size + g.size > maxSize) seal()
    for (const tomb of g.tombstones) add('tombstones', tomb)
    for (const element of g.elements) add('elements', element)
  }
  seal()
  return out
}
