/**
 * Head blocks carried in a broadcast (`Head.Block`, field 100, ours). A
 * writer attaches the block of each head it announces while they fit a
 * size cap; a receiver keeps a carried block only when its bytes hash to
 * the CID of the head that carries it, so a payload cannot plant anything
 * else in its blockstore. The field sits inside `Head` because go-ds-crdt
 * rejects a payload with an unknown top-level field (it takes it for a
 * legacy bare-CID broadcast) but ignores unknown fields of a head.
 */

import { CID } from 'multiformats/cid'
import { MAX_BROADCAST_HEADS } from './broadcast.js'
import { CRDTBroadcast } from './pb/broadcast.js'
import { verifyBlock } from './verify-block.js'
import type { BroadcastHead } from './broadcast.js'

/** A block as carried in a broadcast */
export interface CarriedBlock {
  cid: CID
  bytes: Uint8Array
}

/**
 * Serialises heads, each with its block from `blocks` while the carried
 * bytes stay within `maxBytes`. Heads whose block does not fit (or is not
 * given) are announced alone and fetched by the receivers.
 */
export function encodeBroadcastWithBlocks (heads: BroadcastHead[], blocks: CarriedBlock[], maxBytes: number): Uint8Array {
  const byCid = new Map(blocks.map(b => [b.cid.toString(), b.bytes]))
  let size = 0
  return CRDTBroadcast.encode({
    Heads: heads.map(h => {
      const bytes = byCid.get(h.cid.toString())
      if (bytes == null || size + bytes.byteLength > maxBytes) return { Cid: h.cid.bytes, DagName: h.dagName }
      size += bytes.byteLength
      return { Cid: h.cid.bytes, DagName: h.dagName, Block: bytes as Uint8Array<ArrayBuffer> }
    })
  })
}

/** What a payload carried: blocks that check out, and how many were rejected */
export interface CarriedBlocks {
  blocks: CarriedBlock[]
  rejected: number
}

export interface DecodeCarriedOptions {
  /** Blocks for which this is true (e.g. already stored) are neither hashed nor returned */
  skip?(cid: CID): boolean | Promise<boolean>
}

/**
 * The verified head blocks a payload carries. A carried block whose bytes
 * do not hash to its head's CID is counted as rejected and left out. A
 * payload that does not decode (a legacy bare CID, or junk the head decoder
 * reports) carries nothing.
 */
export async function decodeCarriedBlocks (data: Uint8Array, options: DecodeCarriedOptions = {}): Promise<CarriedBlocks> {
  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(data, { limits: { Heads: MAX_BROADCAST_HEADS } })
  } catch {
    return { blocks: [], rejected: 0 }
  }
  const blocks: CarriedBlock[] = []
  let rejected = 0
  for (const head of message.Heads) {
    if (head.Block == null || head.Block.byteLength === 0) continue
    const cid = tryCID(head.Cid)
    if (cid != null && await options.skip?.(cid) === true) continue
    if (cid == null || !(await verifyBlock(cid, head.Block))) {
      rejected++
      continue
    }
    blocks.push({ cid, bytes: head.Block })
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
