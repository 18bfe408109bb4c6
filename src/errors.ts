/**
 * Named errors thrown by datastore-crdt. Each sets `name` so callers can
 * tell them apart without `instanceof` (which breaks across duplicated
 * module copies).
 *
 * Missing keys throw `NotFoundError` from `interface-store`, like every other
 * interface-datastore implementation.
 */

export { NotFoundError } from 'interface-store'

/** An option given to a factory or method is out of range or of the wrong type */
export class InvalidOptionsError extends Error {
  static override name = 'InvalidOptionsError'
  override name = 'InvalidOptionsError'
}

/** A key is not an interface-datastore `Key` */
export class InvalidKeyError extends Error {
  static override name = 'InvalidKeyError'
  override name = 'InvalidKeyError'
}

/** A value is not a `Uint8Array` */
export class InvalidValueError extends Error {
  static override name = 'InvalidValueError'
  override name = 'InvalidValueError'
}

/** A single write would make a delta larger than `maxBatchDeltaSize` */
export class ValueTooLargeError extends Error {
  static override name = 'ValueTooLargeError'
  override name = 'ValueTooLargeError'
}

/**
 * A write (or a replication or DAG method) on a store that is not started:
 * before its first `start()` or after `stop()`. Reads never throw it: they
 * are served from the local state whether the store runs or not.
 */
export class DatastoreStoppedError extends Error {
  static override name = 'DatastoreStoppedError'
  override name = 'DatastoreStoppedError'
}

/** A broadcast payload is not a CRDTBroadcast nor a legacy binary CID */
export class MalformedBroadcastError extends Error {
  static override name = 'MalformedBroadcastError'
  override name = 'MalformedBroadcastError'
}

/** A DAG block is not a valid dag-pb node carrying a delta */
export class MalformedBlockError extends Error {
  static override name = 'MalformedBlockError'
  override name = 'MalformedBlockError'
}

/** A delta does not decode, or carries values no honest replica writes */
export class MalformedDeltaError extends Error {
  static override name = 'MalformedDeltaError'
  override name = 'MalformedDeltaError'
}

/** Data kept by the store in its datastore could not be decoded */
export class CorruptStateError extends Error {
  static override name = 'CorruptStateError'
  override name = 'CorruptStateError'
}

/** A DAG block could not be fetched from the DAG syncer */
export class BlockFetchError extends Error {
  static override name = 'BlockFetchError'
  override name = 'BlockFetchError'
}

/**
 * A block fetch ended without asking any peer: none was connected (a
 * partition, a replica alone). It says nothing about whether the block
 * exists, so it never counts towards giving a branch up. Thrown by DAG
 * syncers that can tell (`heliaDAGSyncer`), as the `cause` of the
 * `BlockFetchError` the store reports.
 */
export class NoPeersAskedError extends Error {
  static override name = 'NoPeersAskedError'
  override name = 'NoPeersAskedError'
}

/** True for errors no retry can fix: the block or delta itself is bad */
export function isMalformed (err: unknown): boolean {
  const name = (err as Error | undefined)?.name
  return name === 'MalformedBlockError' || name === 'MalformedDeltaError'
}

/** A component the caller passed lacks a service this library needs */
export class MissingServiceError extends Error {
  static override name = 'MissingServiceError'
  override name = 'MissingServiceError'
}

/** A fetched block is larger than the store accepts (`maxBlockSize`) */
export class BlockTooLargeError extends Error {
  static override name = 'BlockTooLargeError'
  override name = 'BlockTooLargeError'
}

/** Another process (another replica) has the data directory open; LevelDB allows one process per directory */
export class DirectoryLockedError extends Error {
  static override name = 'DirectoryLockedError'
  override name = 'DirectoryLockedError'
}

/**
 * A peer broke the block-sync protocol: junk, an unrequested, oversized or
 * hash-mismatched block, too many blocks or bytes, or silence past the idle
 * timeout. The stream is cut and the peer is not asked again for a while.
 */
export class SyncProtocolError extends Error {
  static override name = 'SyncProtocolError'
  override name = 'SyncProtocolError'
}

/**
 * A peer closed a sync stream before taking the request: what libp2p does
 * to a stream beyond the peer's limit of concurrent sync streams, which a
 * stream just ended on this side may still count against for a moment.
 * Not a fault of the peer: it is asked again shortly.
 */
export class SyncRefusedError extends Error {
  static override name = 'SyncRefusedError'
  override name = 'SyncRefusedError'
}

/**
 * A snapshot block is missing a field, holds a value of the wrong type or
 * range, is out of canonical order, or does not match its CID
 */
export class InvalidSnapshotError extends Error {
  static override name = 'InvalidSnapshotError'
  override name = 'InvalidSnapshotError'
}

/** A snapshot was asked for while the state is not the state at its heads (a walk is unfinished) */
export class SnapshotNotReadyError extends Error {
  static override name = 'SnapshotNotReadyError'
  override name = 'SnapshotNotReadyError'
}

/**
 * A write on a replica in trusted mode whose key is not a current writer
 * (or that has no signing key). Nothing was changed.
 */
export class NotAWriterError extends Error {
  static override name = 'NotAWriterError'
  override name = 'NotAWriterError'
}

/**
 * A broadcast received in trusted mode is unsigned, signed by a key that is
 * not a current writer, or carries a signature that does not verify. Its
 * heads are not accepted and its carried blocks are not stored.
 */
export class UntrustedBroadcastError extends Error {
  static override name = 'UntrustedBroadcastError'
  override name = 'UntrustedBroadcastError'
}

/**
 * `installSnapshot(cid)` in trusted mode for a snapshot that no current
 * writer announced (in a broadcast it signed) and this replica did not make.
 * Nothing was fetched or changed.
 */
export class UntrustedSnapshotError extends Error {
  static override name = 'UntrustedSnapshotError'
  override name = 'UntrustedSnapshotError'
}
