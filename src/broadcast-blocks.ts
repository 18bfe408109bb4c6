/**
 * Head blocks carried in a broadcast (CRDTBroadcast field 100, ours;
 * go-ds-crdt skips it). A writer attaches the blocks of the heads it
 * announces while they fit a size cap; a receiver keeps only blocks that
 * are announced heads of the same payload and whose bytes hash to their
 * CID, so a payload cannot plant anything else in its blockstore.
 */

import { CID } from 'multiformats/cid'
import { CRDTBroadcast } from './pb/broadcast.js'
import { verifyBlock } from './verify-block.js'
import type { BroadcastHead } from './broadcast.js'
import { MAX_BROADCAST_HEADS } from './broadcast.js'

/** A block as carried in a broadcast */
export interface CarriedBlock {
  cid: CID
  bytes: Uint8Array
}

/** The bytes one carried block adds to a payload besides its data (tags, lengths, CID) */
function framing (block: CarriedBlock): number {
  return block.cid.bytes.byteLength + 16
}

/**
 * Serialises heads with as many of `blocks` (in order) as fit in `maxBytes`
 * of carried data. Blocks that do not fit are left out: their heads are
 * announced as before and fetched by the receivers.
 */
export function encodeBroadcastWithBlocks (heads: BroadcastHead[], blocks: CarriedBlock[], maxBytes: number): Uint8Array {
  const carried: CarriedBlock[] = []
  let size = 0
  for (const block of blocks) {
    const cost = block.bytes.byteLength + framing(block)
    if (size + cost > maxBytes) continue
    carried.push(block)
    size += cost
  }
  return CRDTBroadcast.encode({
    Heads: heads.map(h => ({ Cid: h.cid.bytes, DagName: h.dagName })),
    Blocks: carried.map(b => ({ Cid: b.cid.bytes, Data: b.bytes as Uint8Array<ArrayBuffer> }))
  })
}

/** What a payload carried: blocks that check out, and how many were rejected */
export interface CarriedBlocks {
  blocks: CarriedBlock[]
  rejected: number
}

/**
 * The verified head blocks a payload carries. A carried block that is not
 * one of the payload's announced heads, or whose bytes do not hash to its
 * CID, is counted as rejected and left out. A payload that does not decode
 * (a legacy bare CID, or junk the head decoder reports) carries nothing.
 */
export async function decodeCarriedBlocks (data: Uint8Array): Promise<CarriedBlocks> {
  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(data, { limits: { Heads: MAX_BROADCAST_HEADS, Blocks: MAX_BROADCAST_HEADS } })
  } catch {
    return { blocks: [], rejected: 0 }
  }
  const announced = new Set<string>()
  for (const head of message.Heads) {
    const cid = tryCID(head.Cid)
    if (cid != null) announced.add(cid.toString())
  }
  const blocks: CarriedBlock[] = []
  let rejected = 0
  for (const block of message.Blocks) {
    const cid = tryCID(block.Cid)
    if (cid == null || !announced.has(cid.toString()) || !(await verifyBlock(cid, block.Data))) {
      rejected++
      continue
    }
    blocks.push({ cid, bytes: block.Data })
  }
  return { blocks, rejected }
}

function tryCID (bytes: Uint8Array | undefined): CID | undefined {
  if (bytes == null || bytes.byteLength === 0) return undefined
  try {
    const [cid, rest] = CID.decodeFirst(bytes)
    return rest.byteLength === 0 ? cid.toV1() : undefined
  } catch {
    return undefined
  }
}
