/**
 * A set of pending writes over a datastore: reads see the pending writes,
 * and `commit()` lands all of them in one datastore batch (atomic on
 * LevelDB). Each key is written at most once per batch, so datastores whose
 * batches apply puts before deletes still end in the intended state.
 */

import { Key } from 'interface-datastore'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

export class WriteSet {
  private readonly store: Datastore
  private readonly writes = new Map<string, Uint8Array | null>()
  private readonly afterCommit: Array<() => void> = []

  constructor (store: Datastore) {
    this.store = store
  }

  get size (): number {
    return this.writes.size
  }

  put (key: Key, value: Uint8Array): void {
    this.writes.set(key.toString(), value)
  }

  delete (key: Key): void {
    this.writes.set(key.toString(), null)
  }

  /** Registers work to run once the writes have landed */
  onCommit (fn: () => void): void {
    this.afterCommit.push(fn)
  }

  /** Reads through the pending writes; `undefined` when absent */
  async get (key: Key, options?: AbortOptions): Promise<Uint8Array | undefined> {
    const pending = this.writes.get(key.toString())
    if (pending !== undefined) {
      return pending ?? undefined
    }
    if (!(await this.store.has(key, options))) {
      return undefined
    }
    return this.store.get(key, options)
  }

  async has (key: Key, options?: AbortOptions): Promise<boolean> {
    const pending = this.writes.get(key.toString())
    if (pending !== undefined) {
      return pending !== null
    }
    return this.store.has(key, options)
  }

  /** Entries under a string prefix, pending writes applied, in key order */
  async list (prefix: string, options?: AbortOptions): Promise<Array<{ key: string, value: Uint8Array }>> {
    const found = new Map<string, Uint8Array>()
    for await (const pair of this.store.query({ prefix }, options) as AsyncIterable<Pair>) {
      found.set(pair.key.toString(), pair.value)
    }
    for (const [key, value] of this.writes) {
      if (!key.startsWith(prefix)) continue
      if (value === null) found.delete(key)
      else found.set(key, value)
    }
    return [...found.entries()]
      .sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
      .map(([key, value]) => ({ key, value }))
  }

  /** Writes everything in one batch, then runs the `onCommit` callbacks */
  async commit (options?: AbortOptions): Promise<void> {
    if (this.writes.size > 0) {
      const batch = this.store.batch()
      for (const [key, value] of this.writes) {
        if (value === null) batch.delete(new Key(key, false))
        else batch.put(new Key(key, false), value)
      }
      await batch.commit(options)
      this.writes.clear()
    }
    for (const fn of this.afterCommit.splice(0)) {
      fn()
    }
  }
}
