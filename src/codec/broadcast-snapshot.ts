/**
 * The snapshot announcement a broadcast carries (issue #16): Head field 101
 * on the first head. Present means "this replica reads snapshots"; its value
 * is the root CID of the newest snapshot the replica has passed, or empty.
 *
 * Invariants: adding the field never pushes a payload over
 * `MAX_BROADCAST_SIZE` (the payload is then sent without it, which only
 * delays compaction); reading it never throws (anything unreadable counts as
 * "no announcement").
 */

import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { BROADCAST_DECODE_LIMITS, MAX_BROADCAST_SIZE } from './broadcast.js'
import { CRDTBroadcast } from './pb/broadcast.js'

/** What a payload announces about snapshots */
export interface SnapshotAnnouncement {
  /** The sender reads snapshots (sets field 101) */
  supported: boolean
  /** The newest snapshot the sender has passed */
  snapshot?: CID
}

/** `payload` with the announcement on its first head (`snapshot` undefined: supported, none passed) */
export function addSnapshotAnnouncement (payload: Uint8Array, snapshot?: CID): Uint8Array {
  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(payload, { limits: BROADCAST_DECODE_LIMITS })
  } catch {
    return payload
  }
  if (message.Heads.length === 0) return payload
  message.Heads[0].Snapshot = (snapshot?.bytes ?? new Uint8Array(0)) as Uint8Array<ArrayBuffer>
  const out = CRDTBroadcast.encode(message)
  return out.byteLength > MAX_BROADCAST_SIZE ? payload : out
}

/** Reads the announcement of a payload */
export function readSnapshotAnnouncement (payload: Uint8Array): SnapshotAnnouncement {
  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(payload, { limits: BROADCAST_DECODE_LIMITS })
  } catch {
    return { supported: false }
  }
  const field = message.Heads[0]?.Snapshot
  if (field == null) return { supported: false }
  if (field.byteLength === 0) return { supported: true }
  try {
    const [cid, rest] = CID.decodeFirst(field)
    if (rest.byteLength === 0 && cid.version === 1 && cid.code === dagCbor.code) return { supported: true, snapshot: cid }
  } catch {}
  return { supported: true }
}
