/**
 * Blocks carried in a broadcast (`Head.Block`, field 100, and `Head.Below`,
 * field 102, both ours). A writer attaches the block of each head it
 * announces while they fit a size cap, and after a head's block the blocks
 * of nodes below it that it announces for the first time (the writes of a
 * burst it gathered into one announcement). A receiver keeps a head's block
 * only when its bytes hash to the head's CID, and a block below only when
 * its bytes hash to a link of the head's block or of a block kept before it,
 * so a payload cannot plant anything in its blockstore that the announced
 * heads do not reach. The fields sit inside `Head` because go-ds-crdt
 * rejects a payload with an unknown top-level field (it takes it for a
 * legacy bare-CID broadcast) but ignores unknown fields of a head.
 */

import * as dagPB from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { BROADCAST_DECODE_LIMITS, MAX_CARRIED_BELOW } from './broadcast.js'
import { bytesKey } from './cid-key.js'
import { CRDTBroadcast } from './pb/broadcast.js'
import { verifyBlock } from './verify-block.js'
import type { BroadcastHead } from './broadcast.js'

/** A block as carried in a broadcast */
export interface CarriedBlock {
  cid: CID
  bytes: Uint8Array
  /**
   * Blocks of nodes below this head, each a link of the head's block or of
   * one listed before it (sent as `Head.Below`; as received, unverified)
   */
  below?: Uint8Array[]
}

/**
 * Serialises heads, each with its block from `blocks` and then the blocks
 * below it (in their order, up to the first that does not fit), while the
 * carried bytes stay within `maxBytes`.
 * Heads whose block does not fit (or is not given) are announced alone and
 * fetched by the receivers, and so are nodes below whose blocks are left
 * out.
 */
export function encodeBroadcastWithBlocks (heads: BroadcastHead[], blocks: CarriedBlock[], maxBytes: number): Uint8Array {
  return encodeCarrying(heads, blocks, maxBytes).payload
}

/** As `encodeBroadcastWithBlocks()`, also saying how many bytes of blocks the payload carries */
export function encodeCarrying (heads: BroadcastHead[], blocks: CarriedBlock[], maxBytes: number): { payload: Uint8Array, carried: number } {
  const byCid = new Map(blocks.map(b => [b.cid.toString(), b]))
  let size = 0
  const payload = CRDTBroadcast.encode({
    Heads: heads.map(h => {
      const block = byCid.get(h.cid.toString())
      if (block == null || size + block.bytes.byteLength > maxBytes) return { Cid: h.cid.bytes, DagName: h.dagName, Below: [] }
      size += block.bytes.byteLength
      const below: Array<Uint8Array<ArrayBuffer>> = []
      for (const bytes of block.below ?? []) {
        if (below.length >= MAX_CARRIED_BELOW || size + bytes.byteLength > maxBytes) break
        size += bytes.byteLength
        below.push(bytes as Uint8Array<ArrayBuffer>)
      }
      return { Cid: h.cid.bytes, DagName: h.dagName, Block: block.bytes as Uint8Array<ArrayBuffer>, Below: below }
    })
  })
  return { payload, carried: size }
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
    message = CRDTBroadcast.decode(data, { limits: BROADCAST_DECODE_LIMITS })
  } catch {
    return { blocks: [], rejected: 0 }
  }
  const blocks: CarriedBlock[] = []
  let rejected = 0
  for (const head of message.Heads) {
    if (head.Block == null || head.Block.byteLength === 0) continue
    const cid = tryCID(head.Cid)
    if (cid == null) {
      rejected += 1 + head.Below.length
      continue
    }
    blocks.push({ cid, bytes: head.Block, ...(head.Below.length > 0 ? { below: head.Below } : {}) })
  }
  const verified = await verifyCarriedBlocks(blocks, options)
  return { blocks: verified.blocks, rejected: rejected + verified.rejected }
}

/**
 * Checks carried blocks (as `decodeBroadcastPayload()` returns them)
 * against their CIDs, and returns them with the blocks below them that
 * check out, all flat, heads before what is below them. A head's block
 * whose bytes do not hash to its CID is counted as rejected and left out,
 * with everything below it. A block below is kept only when its bytes hash
 * (sha2-256) to a link of the head's block or of a block below kept before
 * it; one that does not, or does not decode as dag-pb, is counted as
 * rejected. Blocks `skip` picks are not returned, but the blocks below them
 * are still checked against their links.
 */
export async function verifyCarriedBlocks (carried: CarriedBlock[], options: DecodeCarriedOptions = {}): Promise<CarriedBlocks> {
  const blocks: CarriedBlock[] = []
  let rejected = 0
  for (const { cid, bytes, below } of carried) {
    const present = await options.skip?.(cid) === true
    if (present && (below == null || below.length === 0)) continue
    if (!(await verifyBlock(cid, bytes))) {
      rejected += 1 + (below?.length ?? 0)
      continue
    }
    if (!present) blocks.push({ cid, bytes })
    if (below != null && below.length > 0) rejected += await verifyBelow(bytes, below, blocks, options)
  }
  return { blocks, rejected }
}

/**
 * Adds to `out` the blocks of `below` that hash to a link of `head` or of a
 * block of `below` accepted before them (unless `skip` picks them); returns
 * how many were rejected
 */
async function verifyBelow (head: Uint8Array, below: Uint8Array[], out: CarriedBlock[], options: DecodeCarriedOptions): Promise<number> {
  // links by their multihash: a block hashed with sha2-256 names itself by the same bytes
  const links = new Map<string, CID>()
  const addLinks = (bytes: Uint8Array): boolean => {
    try {
      for (const link of dagPB.decode(bytes).Links) links.set(bytesKey(link.Hash.multihash.bytes), link.Hash)
      return true
    } catch {
      return false
    }
  }
  let rejected = 0
  if (!addLinks(head)) return below.length
  for (const bytes of below) {
    const key = bytesKey((await sha256.digest(bytes)).bytes)
    const link = links.get(key)
    if (link == null) {
      rejected++
      continue
    }
    links.delete(key)
    if (!addLinks(bytes)) {
      rejected++
      continue
    }
    if (await options.skip?.(link) === true) continue
    out.push({ cid: link.toV1(), bytes })
  }
  return rejected
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
