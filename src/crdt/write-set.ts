/**
 * A set of pending writes over a datastore: reads see the pending writes,
 * and `commit()` lands all of them in one datastore batch (atomic on
 * LevelDB). Each key is written at most once per batch, so datastores whose
 * batches apply puts before deletes still end in the intended state.
 *
 * Values read from the datastore are remembered until `commit()`: a WriteSet
 * lives under the engine's merge lock, which serialises every write of the
 * keys it reads. `prefetch()` reads many keys concurrently, which costs far
 * less than reading them one await at a time (an async LevelDB read is a
 * thread-pool round trip).
 *
 * Over datastore-level on classic-level (the store `createReplicaNode()`
 * makes), reads run in-process instead (`getSync`: ~8 µs against ~75 µs for
 * an awaited read, measured here): the same LevelDB, the same key strings
 * and values `LevelDatastore.get()` reads, without the thread pool, the
 * promise or the `NotFoundError` a miss costs. Long prefetches still give
 * the event loop a turn every `SYNC_READS_PER_TURN` reads. A plain
 * `LevelDatastore` (its own `batch()`, not wrapped) is written the same
 * way: `commit()` hands LevelDB the batch of key strings and values
 * `LevelDatastore.batch()` would, without building a `Key` per write and
 * reading its string back. Keys may be given as strings (`StoreKey`).
 */

import { Key } from 'interface-datastore'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/** How many datastore reads `prefetch()` keeps in flight */
const PREFETCH_CONCURRENCY = 1000

/** Entries read per call when a whole prefix range is listed in-process */
const SCAN_CHUNK = 1000

/** In-process reads done before a prefetch lets other work in */
const SYNC_READS_PER_TURN = 512

/** A LevelDB that reads in-process (classic-level 3), as datastore-level opens it */
interface SyncLevel {
  status?: string
  supports?: { getSync?: boolean }
  getSync(key: string): Uint8Array | undefined
  /** The batch `LevelDatastore.batch().commit()` makes: the same key strings and values */
  batch?(ops: LevelOp[]): Promise<void>
  keyEncoding?(): { name?: string }
  valueEncoding?(): { name?: string }
  /** Entries in a key range, as the db's encodings (utf8 keys, Uint8Array values) give them */
  iterator?(options: { gte: string, lt: string }): { nextv(size: number): Promise<Array<[string, Uint8Array]>>, close(): Promise<void> }
}

/** The in-process reader of a datastore, when it is datastore-level over classic-level */
function syncLevelOf (store: Datastore): SyncLevel | undefined {
  const db = (store as { db?: Partial<SyncLevel> }).db
  if (db?.supports?.getSync !== true || typeof db.getSync !== 'function') return undefined
  // LevelDatastore reads db.get(key.toString()) with these encodings; anything else is read through it
  if (db.keyEncoding?.().name !== 'utf8' || db.valueEncoding?.().name !== 'view') return undefined
  return db as SyncLevel
}

const syncLevels = new WeakMap<Datastore, SyncLevel | null>()

/** The in-process reader of `store` (looked up once per store); undefined when it has none */
function levelOf (store: Datastore): SyncLevel | undefined {
  let level = syncLevels.get(store)
  if (level === undefined) {
    level = syncLevelOf(store) ?? null
    syncLevels.set(store, level)
  }
  return level ?? undefined
}

/** `LevelDatastore.prototype.batch`, when `store` is one (looked up once per store) */
const levelBatches = new WeakMap<Datastore, unknown>()

/**
 * Whether `store`'s batches may go to its LevelDB directly: only when it is
 * a `LevelDatastore` whose `batch()` is the class's own (a wrapper, a proxy
 * or a subclass that overrides `batch()` is written through, so whatever it
 * does on a batch still happens)
 */
function writesInProcess (store: Datastore, level: SyncLevel | undefined): boolean {
  if (level == null || typeof level.batch !== 'function') return false
  let own = levelBatches.get(store)
  if (own === undefined) {
    own = null
    for (let proto = Object.getPrototypeOf(store); proto != null; proto = Object.getPrototypeOf(proto)) {
      if (!Object.hasOwn(proto, 'batch')) continue
      if (proto.constructor?.name === 'LevelDatastore') own = proto.batch
      break
    }
    levelBatches.set(store, own)
  }
  return own != null && store.batch === own
}

/** One write of a LevelDB batch */
type LevelOp = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

/**
 * A datastore key as the WriteSet takes it: a `Key`, or its string (what
 * `key.toString()` gives), which spares the hot paths building a `Key` and
 * reading its string back (see `Layout`'s `…Id` methods)
 */
export type StoreKey = Key | string

/** The string of a key */
function idOf (key: StoreKey): string {
  return typeof key === 'string' ? key : key.toString()
}

/** A `Key` for the datastore's own methods */
function keyOf (key: StoreKey): Key {
  return typeof key === 'string' ? new Key(key, false) : key
}

/**
 * Whether `store` holds `key`, outside any WriteSet: read in-process when
 * the store allows (as WriteSet reads), else through `store.has()`. For
 * single reads on a hot path (a received head: is it processed, is it on a
 * walk's frontier), where an awaited LevelDB read is a thread-pool round
 * trip each.
 */
export async function storeHas (store: Datastore, key: StoreKey, options?: AbortOptions): Promise<boolean> {
  options?.signal?.throwIfAborted()
  const level = levelOf(store)
  if (level != null && level.status === 'open') return level.getSync(idOf(key)) != null
  return store.has(keyOf(key), options)
}

/** Cached read result: a value, null (absent), or PRESENT (exists, value not read) */
const PRESENT = Symbol('present')

export class WriteSet {
  private readonly store: Datastore
  /** Pending writes by key string (null = delete) */
  private readonly writes = new Map<string, Uint8Array | null>()
  /** What the datastore holds, as far as read so far, by key string */
  private readonly reads = new Map<string, Uint8Array | null | typeof PRESENT>()
  private readonly afterCommit: Array<() => void> = []

  /** In-process reads of the same LevelDB, when the datastore allows */
  private readonly level?: SyncLevel
  /** Whether the commit's batch goes to that LevelDB directly (a plain `LevelDatastore`) */
  private readonly writesInProcess: boolean

  constructor (store: Datastore) {
    this.store = store
    const level = levelOf(store)
    if (level != null) this.level = level
    this.writesInProcess = writesInProcess(store, level)
  }

  /** The stored value read in-process (null when absent); undefined when that is not possible now */
  private readNow (id: string): Uint8Array | null | undefined {
    const level = this.level
    if (level == null || level.status !== 'open') return undefined
    return level.getSync(id) ?? null
  }

  get size (): number {
    return this.writes.size
  }

  put (key: StoreKey, value: Uint8Array): void {
    this.writes.set(idOf(key), value)
  }

  delete (key: StoreKey): void {
    this.writes.set(idOf(key), null)
  }

  /** Registers work to run once the writes have landed */
  onCommit (fn: () => void): void {
    this.afterCommit.push(fn)
  }

  /** Reads through the pending writes; `undefined` when absent */
  async get (key: StoreKey, options?: AbortOptions): Promise<Uint8Array | undefined> {
    const id = idOf(key)
    const pending = this.writes.get(id)
    if (pending !== undefined) {
      return pending ?? undefined
    }
    let value = this.reads.get(id)
    if (value === undefined || value === PRESENT) {
      options?.signal?.throwIfAborted()
      const now = this.readNow(id)
      value = now !== undefined ? now : await this.read(keyOf(key), options)
      this.reads.set(id, value)
    }
    return value ?? undefined
  }

  async has (key: StoreKey, options?: AbortOptions): Promise<boolean> {
    const id = idOf(key)
    const pending = this.writes.get(id)
    if (pending !== undefined) {
      return pending !== null
    }
    const value = this.reads.get(id)
    if (value !== undefined) {
      return value !== null
    }
    options?.signal?.throwIfAborted()
    const now = this.readNow(id)
    if (now !== undefined) {
      this.reads.set(id, now)
      return now !== null
    }
    return this.store.has(keyOf(key), options)
  }

  /**
   * Reads the given keys from the datastore concurrently and remembers what
   * was found, so later `get()` (or, with `existence`, `has()`) calls on
   * them need no datastore read. `existence` asks only whether they exist.
   */
  async prefetch (keys: Iterable<StoreKey>, options?: AbortOptions & { existence?: boolean }): Promise<void> {
    if (this.readFew(keys)) return
    const todo: Array<{ id: string, key: StoreKey }> = []
    const queued = new Set<string>()
    for (const key of keys) {
      const id = idOf(key)
      if (this.writes.has(id) || this.reads.has(id) || queued.has(id)) continue
      queued.add(id)
      todo.push({ id, key })
    }
    if (todo.length > 0 && this.level?.status === 'open') {
      // in-process: the values themselves cost no more than their existence
      for (let i = 0; i < todo.length; i++) {
        if (i > 0 && i % SYNC_READS_PER_TURN === 0) {
          await new Promise<void>(resolve => setImmediate(resolve))
          options?.signal?.throwIfAborted()
        }
        const value = this.readNow(todo[i].id)
        if (value === undefined) {
          // closed meanwhile: the rest is read the usual way, which reports it
          await this.prefetch(todo.slice(i).map(t => t.key), options)
          return
        }
        this.reads.set(todo[i].id, value)
      }
      return
    }
    const existence = options?.existence === true
    for (let i = 0; i < todo.length; i += PREFETCH_CONCURRENCY) {
      const chunk = todo.slice(i, i + PREFETCH_CONCURRENCY)
      const found = await Promise.all(chunk.map(async ({ key }) => existence
        ? (await this.store.has(keyOf(key), options) ? PRESENT : null)
        : this.read(keyOf(key), options)))
      for (let j = 0; j < chunk.length; j++) {
        this.reads.set(chunk[j].id, found[j])
      }
    }
  }

  /**
   * A prefetch of a few keys (a node's markers) over in-process reads:
   * straight into the cache, no lists built; stops if the store closed
   * meanwhile (later reads report it). False, having read nothing, when the
   * keys are many or reads are not in-process.
   */
  private readFew (keys: Iterable<StoreKey>): boolean {
    if (this.level?.status !== 'open' || !Array.isArray(keys) || keys.length > SYNC_READS_PER_TURN) return false
    for (const key of keys as StoreKey[]) {
      const id = idOf(key)
      if (this.writes.has(id) || this.reads.has(id)) continue
      const value = this.readNow(id)
      if (value === undefined) break
      this.reads.set(id, value)
    }
    return true
  }

  /**
   * Like `prefetch()`, but first reads the keys' longest common prefix with
   * one query of at most `maxEntries` entries. When the query ends within
   * that, each key it did not return is known absent with no read of its
   * own (on a dense run of new keys, one short query replaces a read per
   * key). Returns false when the query was cut short; the keys it left
   * undecided are then read one by one.
   */
  async prefetchByScan (keys: Iterable<StoreKey>, maxEntries: number, options?: AbortOptions): Promise<boolean> {
    const todo: Array<{ id: string, key: StoreKey }> = []
    let prefix: string | undefined
    for (const key of keys) {
      const id = idOf(key)
      if (this.writes.has(id) || this.reads.has(id)) continue
      todo.push({ id, key })
      prefix = prefix == null ? id : commonPrefix(prefix, id)
    }
    if (prefix == null) return true
    // one entry past the limit tells a cut-short scan from one that ended
    const scanned = await this.scan(prefix, maxEntries + 1, options)
    const complete = scanned.length <= maxEntries
    const found = new Map<string, Uint8Array>()
    for (let i = 0; i < scanned.length && i < maxEntries; i++) found.set(scanned[i][0], scanned[i][1])
    const rest: StoreKey[] = []
    for (const { id, key } of todo) {
      const value = found.get(id)
      if (value !== undefined) {
        this.reads.set(id, value)
      } else if (complete && inPrefixQuery(id, prefix)) {
        this.reads.set(id, null)
      } else {
        rest.push(key)
      }
    }
    // the scan's other entries (values beside priorities) are worth keeping too
    for (const [id, value] of found) {
      if (!this.writes.has(id) && !this.reads.has(id)) this.reads.set(id, value)
    }
    await this.prefetch(rest, options)
    return complete
  }

  /**
   * Up to `max` entries under a string prefix (`Infinity`: all of them), in
   * key order. Over datastore-level they come straight from LevelDB, up to
   * `SCAN_CHUNK` per call, with no `Key` and no async step per entry, over
   * the range its prefix query reads (`gte` the prefix, `lt` the prefix and
   * U+00FF, see `inPrefixQuery()`); otherwise from the datastore's query.
   */
  private async scan (prefix: string, max: number, options?: AbortOptions): Promise<Array<[string, Uint8Array]>> {
    const all: Array<[string, Uint8Array]> = []
    const level = this.level
    if (level?.status !== 'open' || typeof level.iterator !== 'function') {
      for await (const pair of this.store.query({ prefix }, options) as AsyncIterable<Pair>) {
        if (all.length >= max) break
        all.push([pair.key.toString(), pair.value])
      }
      return all
    }
    options?.signal?.throwIfAborted()
    const it = level.iterator({ gte: prefix, lt: prefix + '\xFF' })
    try {
      while (all.length < max) {
        // nextv() may return fewer entries than asked while more are left
        // (it stops at a byte budget): only an empty answer ends the range
        const chunk = await it.nextv(Math.min(max - all.length, SCAN_CHUNK))
        if (chunk.length === 0) break
        for (const entry of chunk) all.push(entry)
        options?.signal?.throwIfAborted()
      }
      return all
    } finally {
      await it.close()
    }
  }

  /** One datastore read; null when absent */
  private async read (key: Key, options?: AbortOptions): Promise<Uint8Array | null> {
    try {
      return await this.store.get(key, options)
    } catch (err: any) {
      if (err?.name === 'NotFoundError') return null
      throw err
    }
  }

  /** Entries under a string prefix, pending writes applied, in key order */
  async list (prefix: string, options?: AbortOptions): Promise<Array<{ key: string, value: Uint8Array }>> {
    const found = new Map(await this.scan(prefix, Infinity, options))
    for (const [key, value] of this.writes) {
      if (!key.startsWith(prefix)) continue
      if (value === null) found.delete(key)
      else found.set(key, value)
    }
    return [...found.entries()]
      .sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
      .map(([key, value]) => ({ key, value }))
  }

  /**
   * Writes everything in one batch, then runs the `onCommit` callbacks.
   *
   * The signal is checked once, before the batch starts, and is not handed
   * to the batch: once the atomic write has started it must finish, or the
   * datastore could apply it while the caller is told it failed
   * (datastore-level races its batch against the signal), leaving the
   * in-memory state (heads cache, events, announcements that the
   * `onCommit` callbacks and the caller drive) behind the disk.
   */
  async commit (options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.writes.size > 0) {
      const level = this.level
      if (this.writesInProcess && level?.batch != null && level.status === 'open') {
        // what LevelDatastore's batch hands LevelDB, without a Key per write
        const ops: LevelOp[] = []
        for (const [key, value] of this.writes) {
          ops.push(value === null ? { type: 'del', key } : { type: 'put', key, value })
        }
        await level.batch(ops)
      } else {
        const batch = this.store.batch()
        for (const [id, value] of this.writes) {
          if (value === null) batch.delete(keyOf(id))
          else batch.put(keyOf(id), value)
        }
        await batch.commit()
      }
      this.writes.clear()
    }
    this.reads.clear()
    for (const fn of this.afterCommit.splice(0)) {
      fn()
    }
  }
}

function commonPrefix (a: string, b: string): string {
  const n = Math.min(a.length, b.length)
  let i = 0
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++
  return a.slice(0, i)
}

/**
 * Whether a prefix query is sure to return `id`: datastore-level answers a
 * prefix query with the range [prefix, prefix + '\xFF'), which misses keys
 * whose next character is U+00FF or above; their absence from the results
 * proves nothing. The store's own layout keeps every key ASCII (see
 * `escapeSegment` in layout.ts), so this only guards keys built otherwise.
 */
function inPrefixQuery (id: string, prefix: string): boolean {
  return id.length === prefix.length || id.charCodeAt(prefix.length) < 0xff
}
