/**
 * Broadcast payloads: the heads a replica announces (go-ds-crdt's
 * `CRDTBroadcast`), plus the legacy form where the payload is one binary CID.
 */

import { CID } from 'multiformats/cid'
import { DAG_PB_CODE } from './block-key.js'
import { MalformedBroadcastError } from './errors.js'
import { CRDTBroadcast } from './pb/broadcast.js'

/** A head as announced on the wire */
export interface BroadcastHead {
  cid: CID
  dagName: string
}

/** The largest number of heads accepted from one broadcast */
export const MAX_BROADCAST_HEADS = 1024

/** Serialises heads into a CRDTBroadcast payload */
export function encodeBroadcast (heads: BroadcastHead[]): Uint8Array {
  return CRDTBroadcast.encode({
    Heads: heads.map(h => ({ Cid: h.cid.bytes, DagName: h.dagName }))
  })
}

/**
 * Parses a broadcast payload into heads grouped by DAG name. Throws
 * `MalformedBroadcastError` for anything that is neither a CRDTBroadcast
 * with valid CIDs nor a bare binary CID.
 */
export function decodeBroadcast (data: Uint8Array): Map<string, CID[]> {
  const legacy = tryDecodeCID(data)
  if (legacy?.code === DAG_PB_CODE) {
    return new Map([['', [legacy]]])
  }

  let message: CRDTBroadcast
  try {
    message = CRDTBroadcast.decode(data, { limits: { Heads: MAX_BROADCAST_HEADS } })
  } catch (err: any) {
    throw new MalformedBroadcastError(`Broadcast does not decode: ${err.message}`)
  }

  if (message.Heads.length === 0) {
    throw new MalformedBroadcastError('Broadcast carries no heads')
  }

  const byDag = new Map<string, CID[]>()
  for (const head of message.Heads) {
    const cid = tryDecodeCID(head.Cid)
    if (cid == null) {
      throw new MalformedBroadcastError('Broadcast head is not a valid binary CID')
    }
    if (cid.code !== DAG_PB_CODE) {
      throw new MalformedBroadcastError(`Broadcast head ${cid} is not a dag-pb node`)
    }
    const list = byDag.get(head.DagName) ?? []
    if (!list.some(c => c.equals(cid))) list.push(cid)
    byDag.set(head.DagName, list)
  }
  return byDag
}

function tryDecodeCID (bytes: Uint8Array | undefined): CID | undefined {
  if (bytes == null || bytes.byteLength === 0) return undefined
  try {
    const [cid, rest] = CID.decodeFirst(bytes)
    return rest.byteLength === 0 ? cid.toV1() : undefined
  } catch {
    return undefined
  }
}
