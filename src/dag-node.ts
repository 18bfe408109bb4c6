/**
 * DAG nodes: dag-pb nodes (CIDv1, sha2-256) whose Data is a delta and whose
 * Links point at the heads the writer had seen, byte-for-byte as go-ds-crdt
 * builds them.
 */

import * as dagPB from '@ipld/dag-pb'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { DAG_PB_CODE } from './block-key.js'
import { decodeDelta, encodeDelta } from './delta.js'
import { MalformedBlockError } from './errors.js'
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
  links: CID[]
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
 * CID is not dag-pb or the bytes are not a dag-pb node, and
 * `MalformedDeltaError` when its Data is not a delta.
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

  const links: CID[] = []
  for (const link of node.Links) {
    if (link.Hash.code !== DAG_PB_CODE) {
      throw new MalformedBlockError(`Block ${cid} links to ${link.Hash}, which is not a dag-pb node`)
    }
    links.push(link.Hash.toV1())
  }

  return {
    cid,
    delta: decodeDelta(node.Data ?? new Uint8Array(0)),
    links
  }
}
