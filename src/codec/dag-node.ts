/**
 * DAG nodes: dag-pb nodes (CIDv1, sha2-256) whose Data is a delta and whose
 * Links point at the heads the writer had seen, byte-for-byte as go-ds-crdt
 * builds them.
 */

import * as dagPB from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { MalformedBlockError } from '../errors.js'
import { DAG_PB_CODE } from './block-key.js'
import { decodeDelta, encodeDelta } from './delta.js'
import type { Delta } from './delta.js'

/** A DAG node ready to be stored */
export interface EncodedNode {
  cid: CID
  bytes: Uint8Array
}

/** A DAG node read from a block */
export interface DecodedNode {
  cid: CID
  delta: Delta
  /** Usable links (dag-pb, sha2-256, 32-byte digest), duplicates removed, as CIDv1 */
  links: CID[]
  /**
   * How many links were refused as unusable: no replica can ever fetch
   * them (another codec, an identity or truncated digest, another hash).
   * The node itself is merged; the engine records the refusal.
   */
  refusedLinks?: number
  /** Size (bytes) of the block it was decoded from */
  size?: number
}

/**
 * The most links a node may have. An honest node links every head its
 * writer had, which stays far below this; a node over it is refused whole
 * rather than costing one walk record per link.
 */
export const MAX_NODE_LINKS = 4096

const SHA2_256 = 0x12
const SHA2_256_LENGTH = 32

/** Up to this many links, duplicates are found by comparing digests pairwise */
const FEW_LINKS = 16

/** Two usable links (both dag-pb, sha2-256) name the same block when their digests are equal */
function sameDigest (a: CID, b: CID): boolean {
  const x = a.multihash.digest
  const y = b.multihash.digest
  for (let i = 0; i < SHA2_256_LENGTH; i++) {
    if (x[i] !== y[i]) return false
  }
  return true
}

/** Whether a link names a block this store could fetch and decode */
function usable (link: CID): boolean {
  return link.code === DAG_PB_CODE && link.multihash.code === SHA2_256 && link.multihash.size === SHA2_256_LENGTH && link.multihash.digest.byteLength === SHA2_256_LENGTH
}

/**
 * Builds the dag-pb block for a delta linking the given heads. Links are
 * written in the order given; every link carries an explicit empty Name and a
 * zero Tsize, as go's marshaller writes them.
 */
export async function encodeNode (delta: Delta, links: CID[]): Promise<EncodedNode> {
  const bytes = dagPB.encode({
    Data: encodeDelta(delta),
    Links: links.map(Hash => ({ Hash, Name: '', Tsize: 0 }))
  })
  const digest = await sha256.digest(bytes)
  return { cid: CID.createV1(DAG_PB_CODE, digest), bytes }
}

/**
 * Decodes a block fetched for `cid`. Throws `MalformedBlockError` when the
 * CID is not dag-pb, the bytes are not a dag-pb node or it has more than
 * `MAX_NODE_LINKS` links, and `MalformedDeltaError` when its Data is not a
 * valid delta. Unusable links are left out and counted (`refusedLinks`):
 * like go-ds-crdt, what is valid in the node is still merged.
 */
export function decodeNode (cid: CID, bytes: Uint8Array): DecodedNode {
  if (cid.code !== DAG_PB_CODE) {
    throw new MalformedBlockError(`Block ${cid} is not dag-pb (codec 0x${cid.code.toString(16)})`)
  }

  let node: dagPB.PBNode
  try {
    node = dagPB.decode(bytes)
  } catch (err: any) {
    throw new MalformedBlockError(`Block ${cid} is not a dag-pb node: ${err.message}`)
  }

  if (node.Links.length > MAX_NODE_LINKS) {
    throw new MalformedBlockError(`Block ${cid} has ${node.Links.length} links, over the limit of ${MAX_NODE_LINKS}`)
  }
  const links: CID[] = []
  // few links (the usual case): compared by digest, no string built per link
  const seen = node.Links.length > FEW_LINKS ? new Set<string>() : undefined
  let refusedLinks = 0
  for (const link of node.Links) {
    if (!usable(link.Hash)) {
      refusedLinks++
      continue
    }
    const v1 = link.Hash.toV1()
    if (seen != null) {
      const id = v1.toString()
      if (seen.has(id)) continue
      seen.add(id)
    } else if (links.some(other => sameDigest(other, v1))) {
      continue
    }
    links.push(v1)
  }

  const decoded: DecodedNode = {
    cid,
    delta: decodeDelta(node.Data ?? new Uint8Array(0)),
    links,
    size: bytes.byteLength
  }
  if (refusedLinks > 0) decoded.refusedLinks = refusedLinks
  return decoded
}
