/**
 * Broadcast payloads: the heads a replica announces (go-ds-crdt's
 * `CRDTBroadcast`), plus the legacy form where the payload is one binary CID.
 *
 * Payloads come from anyone on the topic, so decoding is bounded: the
 * payload size, the number of heads and of DAG names are capped, only CIDs a
 * replica can fetch and check are accepted (CIDv1 or v0 dag-pb with a 32-byte
 * sha2-256 digest, as every honest replica writes them), duplicates are
 * removed in linear time, and error messages never quote the untrusted bytes.
 * `splitBroadcast()` cuts a long list of heads into payloads that every
 * replica accepts.
 */

import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { MalformedBroadcastError } from '../errors.js'
import { DAG_PB_CODE } from './block-key.js'
import { CRDTBroadcast } from './pb/broadcast.js'
import type { CarriedBlock } from './broadcast-blocks.js'

/** A head as announced on the wire */
export interface BroadcastHead {
  cid: CID
  dagName: string
}

/** The largest number of heads accepted from one broadcast */
export const MAX_BROADCAST_HEADS = 1024

/** The most blocks below one head a broadcast may carry (`Head.Below`; a payload with more does not decode) */
export const MAX_CARRIED_BELOW = 1024

/** The bounds every decode of a received `CRDTBroadcast` applies */
export const BROADCAST_DECODE_LIMITS = { Heads: MAX_BROADCAST_HEADS, Heads$: { Below: MAX_CARRIED_BELOW } }

/** The largest number of distinct DAG names accepted from one broadcast */
export const MAX_BROADCAST_DAG_NAMES = 64

/** The longest DAG name (UTF-16 code units, as JavaScript counts) accepted in a broadcast */
export const MAX_BROADCAST_DAG_NAME_LENGTH = 256

/**
 * The largest broadcast payload accepted (bytes): room for
 * `MAX_BROADCAST_HEADS` heads with long DAG names
 */
export const MAX_BROADCAST_SIZE = 256 * 1024

/** Bytes of a binary CIDv1 dag-pb sha2-256 CID */
const CID_BYTES = 36

/** Serialises heads into a CRDTBroadcast payload */
export function encodeBroadcast (heads: BroadcastHead[]): Uint8Array {
  return CRDTBroadcast.encode({
    Heads: heads.map(h => ({ Cid: h.cid.bytes, DagName: h.dagName, Below: [] }))
  })
}

/** Bytes of `n` as a protobuf varint */
function varintLength (n: number): number {
  let bytes = 1
  for (let rest = n; rest >= 0x80; rest = Math.floor(rest / 0x80)) bytes++
  return bytes
}

/**
 * Cuts heads into as few payloads as the decoder's limits allow (heads, DAG
 * names and bytes per payload), keeping their order. Heads with a DAG name
 * over the name limit are left out: no replica would accept them. `reserve`
 * bytes of each payload are left free (for a signature added later).
 */
export function splitBroadcast (heads: BroadcastHead[], reserve = 0): Uint8Array[] {
  const out: Uint8Array[] = []
  let current: BroadcastHead[] = []
  let names = new Set<string>()
  let bytes = 0
  for (const head of heads) {
    if (head.dagName.length > MAX_BROADCAST_DAG_NAME_LENGTH) continue
    const nameBytes = new TextEncoder().encode(head.dagName).byteLength
    // the Head as encoded (at most: an empty name counted too): tag + length + (tag + length + CID, tag + length + name)
    const cidBytes = head.cid.bytes.byteLength
    const inner = 1 + varintLength(cidBytes) + cidBytes + 1 + varintLength(nameBytes) + nameBytes
    const size = 1 + varintLength(inner) + inner
    const newName = !names.has(head.dagName)
    if (current.length >= MAX_BROADCAST_HEADS || (newName && names.size >= MAX_BROADCAST_DAG_NAMES) || bytes + size > MAX_BROADCAST_SIZE - reserve) {
      out.push(encodeBroadcast(current))
      current = []
      names = new Set()
      bytes = 0
    }
    current.push(head)
    names.add(head.dagName)
    bytes += size
  }
  if (current.length > 0) out.push(encodeBroadcast(current))
  return out
}

/**
 * Parses a broadcast payload into heads grouped by DAG name. Throws
 * `MalformedBroadcastError` for anything that is neither a CRDTBroadcast
 * within the limits above, naming only usable CIDs, nor a bare binary CID.
 */
export function decodeBroadcast (data: Uint8Array): Map<string, CID[]> {
  return decodeBroadcastPayload(data).heads
}

/** A broadcast payload decoded: its heads, and the head blocks it carries (not yet checked against their CIDs) */
export interface DecodedBroadcast {
  heads: Map<string, CID[]>
  blocks: CarriedBlock[]
}

/**
 * Like `decodeBroadcast()`, also returning the head blocks the payload
 * carries (`Head.Block`, see broadcast-blocks.ts), in one decode. The
 * blocks are views into `data`, unverified: `verifyCarriedBlocks()` checks
 * them.
 */
export function decodeBroadcastPayload (data: Uint8Array): DecodedBroadcast {
  if (data.byteLength > MAX_BROADCAST_SIZE) {
    throw new MalformedBroadcastError(`Broadcast of ${data.byteLength} bytes exceeds the limit of ${MAX_BROADCAST_SIZE}`)
  }
  if (data.byteLength <= CID_BYTES) {
    const legacy = tryDecodeCID(data)
    if (legacy != null && usable(legacy)) {
      return { heads: new Map([['', [legacy]]]), blocks: [] }
    }
  }

  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(data, { limits: BROADCAST_DECODE_LIMITS })
  } catch (err: any) {
    // protons' messages name fields and limits, never the payload's bytes
    throw new MalformedBroadcastError(`Broadcast does not decode: ${String(err?.message ?? err).slice(0, 200)}`)
  }

  if (message.Heads.length === 0) {
    throw new MalformedBroadcastError('Broadcast carries no heads')
  }

  const byDag = new Map<string, CID[]>()
  const seen = new Set<string>()
  const blocks: CarriedBlock[] = []
  const carried = new Set<string>()
  for (const [i, head] of message.Heads.entries()) {
    const cid = tryDecodeCID(head.Cid)
    if (cid == null) {
      throw new MalformedBroadcastError(`Broadcast head ${i} is not a valid binary CID`)
    }
    if (!usable(cid)) {
      throw new MalformedBroadcastError(`Broadcast head ${i} is not a dag-pb node named by a 32-byte sha2-256 digest`)
    }
    if (head.DagName.length > MAX_BROADCAST_DAG_NAME_LENGTH) {
      throw new MalformedBroadcastError(`Broadcast head ${i} has a DAG name longer than ${MAX_BROADCAST_DAG_NAME_LENGTH} characters`)
    }
    let list = byDag.get(head.DagName)
    if (list == null) {
      if (byDag.size >= MAX_BROADCAST_DAG_NAMES) {
        throw new MalformedBroadcastError(`Broadcast names more than ${MAX_BROADCAST_DAG_NAMES} DAGs`)
      }
      list = []
      byDag.set(head.DagName, list)
    }
    const id = `${head.DagName}\u0000${cid.toString()}`
    if (seen.has(id)) continue
    seen.add(id)
    list.push(cid)
    if (head.Block != null && head.Block.byteLength > 0 && !carried.has(cid.toString())) {
      carried.add(cid.toString())
      blocks.push({ cid, bytes: head.Block, ...(head.Below.length > 0 ? { below: head.Below } : {}) })
    }
  }
  return { heads: byDag, blocks }
}

/** Whether a replica can fetch and check the node a CID names */
export function usable (cid: CID): boolean {
  return cid.code === DAG_PB_CODE && cid.multihash.code === sha256.code && cid.multihash.size === 32 && cid.multihash.digest.byteLength === 32
}

function tryDecodeCID (bytes: Uint8Array | undefined): CID | undefined {
  if (bytes == null || bytes.byteLength === 0 || bytes.byteLength > CID_BYTES + 2) return undefined
  try {
    const [cid, rest] = CID.decodeFirst(bytes)
    return rest.byteLength === 0 ? cid.toV1() : undefined
  } catch {
    return undefined
  }
}
