/**
 * The trust gate of a store: in trusted mode it signs what this replica
 * broadcasts and admits only payloads signed by a current writer; in open
 * mode (no writer list) it passes everything through untouched, so open
 * mode stays byte for byte go-ds-crdt's.
 *
 * Invariants:
 * - The writer list is the persisted one when there is one (so a
 *   revocation survives a restart), else `init.writers`; `setWriters`
 *   persists before it takes effect.
 * - A replica signs only when it has a private key and that key is a
 *   current writer; otherwise `seal` returns `undefined` and nothing is
 *   sent (other replicas would reject it, and gossipsub would penalise us).
 * - In trusted mode a snapshot is installed only when a current writer
 *   announced it in a payload it signed, or this replica made it
 *   (`checkSnapshot`): the last `MAX_KNOWN_SNAPSHOTS` announced are kept.
 * - The list lives under `<namespace>/tw`, beside the store's other state
 *   and outside every prefix the store scans (`/s/`, `/h/`, `/a/`, `/b/`,
 *   `/w/`, `/x/`), so no user key and no scan can meet it.
 */

import { Key } from 'interface-datastore'
import { readSnapshotAnnouncement } from '../codec/broadcast-snapshot.js'
import { CorruptStateError, InvalidOptionsError, NotAWriterError, UntrustedSnapshotError } from '../errors.js'
import { signBroadcast, verifyBroadcast } from './signature.js'
import { parseWriters, peerIdOf } from './writers.js'
import type { WriterId } from './writers.js'
import type { Logger, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

export interface TrustGateInit {
  datastore: Datastore
  /** The store's namespace (`Layout.namespace`) */
  namespace: string
  /** Name signatures are bound to (the pubsub topic) */
  topic: string
  /** Writers when none are persisted; absent = open mode */
  writers?: Iterable<WriterId>
  /** This replica's signing key */
  privateKey?: PrivateKey
  log: Logger
}

/** Room for the signature field: tag, length, a 36-byte key and a 64-byte signature with their tags, and slack */
export const SIGNATURE_OVERHEAD = 128

/** Snapshots remembered with the writer that announced them (most recent) */
export const MAX_KNOWN_SNAPSHOTS = 64

/** Who vouches for a snapshot this replica made itself */
const SELF = ''

/** Format version of the persisted writer list */
const WRITERS_FORMAT = 1

export class TrustGate {
  /** Broadcasts refused since start: unsigned, foreign or forged */
  public rejected = 0
  /** This replica's peer ID, when it has a key */
  public readonly self?: string
  private readonly init: TrustGateInit
  private readonly key: Key
  private writers?: Set<string>
  /**
   * Payloads `check` verified (the transport's validator), with their
   * writer: `admit` then checks only that the writer is still on the list,
   * not the signature again. Keyed by the payload object, so only the very
   * bytes that were verified are let through, and forgotten with them
   */
  private readonly verified = new WeakMap<Uint8Array, string>()
  /** Snapshot CID → the writer whose signed payload announced it (`SELF`: made here), oldest first */
  private readonly snapshots = new Map<string, string>()

  constructor (init: TrustGateInit) {
    this.init = init
    this.key = new Key(`${init.namespace}/tw`)
    // checked at construction so a bad list or key fails createCRDTDatastore()
    if (init.writers != null) this.writers = new Set(parseWriters(init.writers))
    if (init.privateKey != null && init.privateKey.type !== 'Ed25519' && this.writers != null) {
      throw new InvalidOptionsError(`privateKey must be an Ed25519 key to sign broadcasts, got ${String(init.privateKey.type)}`)
    }
    this.self = init.privateKey?.type === 'Ed25519' ? peerIdOf(init.privateKey.publicKey.toMultihash()) : undefined
  }

  /** Bytes a signature adds to a payload (0 in open mode), kept free when payloads are cut */
  get overhead (): number {
    return this.writers == null ? 0 : SIGNATURE_OVERHEAD
  }

  /** True in trusted mode */
  get trusted (): boolean {
    return this.writers != null
  }

  /** The current writers (peer IDs), or undefined in open mode */
  list (): string[] | undefined {
    return this.writers == null ? undefined : [...this.writers]
  }

  /** True when this replica may write: open mode, or its key is a writer */
  get canWrite (): boolean {
    return this.writers == null || (this.self != null && this.writers.has(this.self))
  }

  /** Loads the persisted writer list, which wins over `init.writers` */
  async load (options?: AbortOptions): Promise<void> {
    if (!(await this.init.datastore.has(this.key, options))) return
    const bytes = await this.init.datastore.get(this.key, options)
    let stored: { v: number, writers: string[] | null }
    try {
      stored = JSON.parse(new TextDecoder().decode(bytes))
      if (stored.v !== WRITERS_FORMAT) throw new Error(`format ${String(stored.v)}`)
      this.writers = stored.writers == null ? undefined : new Set(parseWriters(stored.writers))
    } catch (err: any) {
      throw new CorruptStateError(`The stored writer list at ${this.key.toString()} does not decode: ${String(err.message)}`)
    }
    this.init.log('trusted mode: %s', this.writers == null ? 'off (stored)' : `${this.writers.size} writers (stored)`)
  }

  /** Replaces the writer list (persisted first); `null` returns to open mode */
  async set (writers: Iterable<WriterId> | null, options?: AbortOptions): Promise<void> {
    const next = writers == null ? null : parseWriters(writers)
    const record = { v: WRITERS_FORMAT, writers: next }
    await this.init.datastore.put(this.key, new TextEncoder().encode(JSON.stringify(record)), options)
    this.writers = next == null ? undefined : new Set(next)
  }

  /** Throws `NotAWriterError` unless this replica may write */
  checkWriter (): void {
    if (this.canWrite) return
    throw new NotAWriterError(this.self == null
      ? 'This replica is read-only: the store is in trusted mode and has no Ed25519 private key to sign with (pass privateKey)'
      : `This replica is read-only: its key ${this.self} is not one of the store's writers`)
  }

  /**
   * The payload as this replica sends it: unchanged in open mode, signed in
   * trusted mode, `undefined` when this replica may not write
   */
  async seal (payload: Uint8Array, options?: AbortOptions): Promise<Uint8Array | undefined> {
    if (this.writers == null) return payload
    if (!this.canWrite || this.init.privateKey == null) return undefined
    return signBroadcast(payload, this.init.privateKey, this.init.topic, options)
  }

  /**
   * Whether a received payload may be acted on: always in open mode; in
   * trusted mode only when signed by a current writer. Refusals are
   * counted and logged, never thrown
   */
  async admit (payload: Uint8Array, options?: AbortOptions): Promise<boolean> {
    const writers = this.writers
    if (writers == null) return true
    const checked = this.verified.get(payload)
    if (checked != null && writers.has(checked)) {
      this.announced(payload, checked)
      return true
    }
    try {
      this.announced(payload, await verifyBroadcast(payload, this.init.topic, id => writers.has(id), options))
      return true
    } catch (err: any) {
      this.rejected++
      this.init.log.error('refusing broadcast - %e', err)
      return false
    }
  }

  /**
   * Like `admit` without counting or logging: for transports that drop
   * early (gossipsub validators). A payload it passes is remembered, so
   * when the transport hands the same bytes to the replicator the
   * signature is not verified twice
   */
  async check (payload: Uint8Array): Promise<boolean> {
    const writers = this.writers
    if (writers == null) return true
    try {
      this.verified.set(payload, await verifyBroadcast(payload, this.init.topic, id => writers.has(id)))
      return true
    } catch {
      return false
    }
  }

  /** Remembers the snapshot an admitted payload announces, with the writer that signed it */
  private announced (payload: Uint8Array, writer: string): void {
    const { snapshot } = readSnapshotAnnouncement(payload)
    if (snapshot != null) this.remember(snapshot, writer)
  }

  /** Remembers a snapshot this replica made from its own state */
  made (snapshot: CID): void {
    this.remember(snapshot, SELF)
  }

  /**
   * Throws `UntrustedSnapshotError` in trusted mode unless a current writer
   * announced the snapshot or this replica made it
   */
  checkSnapshot (snapshot: CID): void {
    if (this.writers == null) return
    const by = this.snapshots.get(snapshot.toString())
    if (by === SELF || (by != null && this.writers.has(by))) return
    throw new UntrustedSnapshotError(by == null
      ? `Snapshot ${snapshot} was not announced by a current writer: in trusted mode only snapshots a writer announced in a signed broadcast (or this replica made) are installed`
      : `Snapshot ${snapshot} was announced by ${by}, which is no longer a writer`)
  }

  private remember (snapshot: CID, by: string): void {
    const key = snapshot.toString()
    // a snapshot this replica made stays vouched for by itself
    if (this.snapshots.get(key) === SELF) return
    this.snapshots.delete(key)
    this.snapshots.set(key, by)
    if (this.snapshots.size > MAX_KNOWN_SNAPSHOTS) this.snapshots.delete(this.snapshots.keys().next().value as string)
  }
}
