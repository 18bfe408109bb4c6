/**
 * The block-sync protocol, `/datastore-crdt/sync/1.0.0`: names, limits and
 * the codec of its messages. See the README ("Fast sync") for the design.
 *
 * One request per stream. The asker writes one `SyncRequest` frame and
 * closes its writing side; the server answers with `SyncBlock` frames, in
 * descending height (a topological order: heights strictly decrease along
 * links), and closes. Every frame is length-prefixed (unsigned varint).
 */

import { CID } from 'multiformats/cid'
import { SyncProtocolError } from '../../errors.js'
import { SyncBlock, SyncRequest } from './pb/sync.js'

export const SYNC_PROTOCOL = '/datastore-crdt/sync/1.0.0'

/** Blocks one request may ask for, and the server's own cap */
export const DEFAULT_MAX_BLOCKS = 8192
/** Bytes of block data one request may ask for, and the server's own cap */
export const DEFAULT_MAX_BYTES = 64 * 1024 * 1024
/** The largest block sent or accepted: go-ds-crdt's delta size cap plus room for links */
export const DEFAULT_MAX_BLOCK_SIZE = 2 * 1024 * 1024
/** Longest wait (ms) for the next frame before a peer is cut off */
export const DEFAULT_IDLE_TIMEOUT = 10_000
/** Streams of this protocol open at once with one peer, each way */
export const DEFAULT_MAX_STREAMS_PER_PEER = 2
/** CIDs in a request's `want` and `have` lists at most */
export const MAX_WANT = 256
export const MAX_HAVE = 1024
/** A request frame is never larger than this */
export const MAX_REQUEST_SIZE = (MAX_WANT + MAX_HAVE) * 80 + 64

/** A request as the asker means it */
export interface BlockRequest {
  want: CID[]
  have: CID[]
  maxBlocks: number
  maxBytes: number
  /** The asker held everything below every `have` CID as it asked (see sync.proto); absent: false */
  complete?: boolean
}

export function encodeRequest (req: BlockRequest): Uint8Array {
  return SyncRequest.encode({
    want: req.want.map(c => c.bytes),
    have: req.have.map(c => c.bytes),
    maxBlocks: req.maxBlocks,
    maxBytes: req.maxBytes,
    complete: req.complete === true
  })
}

/** Parses a request; throws `SyncProtocolError` when it is not one */
export function decodeRequest (bytes: Uint8Array): BlockRequest {
  let msg: SyncRequest
  try {
    msg = SyncRequest.decode(bytes, { limits: { want: MAX_WANT, have: MAX_HAVE } })
  } catch (err: any) {
    throw new SyncProtocolError(`Sync request does not decode: ${err.message}`)
  }
  return {
    want: msg.want.map(parseCID),
    have: msg.have.map(parseCID),
    maxBlocks: msg.maxBlocks,
    maxBytes: msg.maxBytes,
    complete: msg.complete
  }
}

export function encodeBlock (cid: CID, bytes: Uint8Array): Uint8Array {
  return SyncBlock.encode({ cid: cid.bytes, data: bytes as Uint8Array<ArrayBuffer> })
}

/** Parses a block frame; throws `SyncProtocolError` when it is not one */
export function decodeBlock (frame: Uint8Array): { cid: CID, bytes: Uint8Array } {
  let msg: SyncBlock
  try {
    msg = SyncBlock.decode(frame)
  } catch (err: any) {
    throw new SyncProtocolError(`Sync block does not decode: ${err.message}`)
  }
  return { cid: parseCID(msg.cid), bytes: msg.data }
}

function parseCID (bytes: Uint8Array): CID {
  try {
    const [cid, rest] = CID.decodeFirst(bytes)
    if (rest.byteLength === 0) return cid.toV1()
  } catch {}
  throw new SyncProtocolError('Not a binary CID')
}
