/**
 * Fetching one snapshot block: through a block getter (which may fetch it
 * from peers), bounded in time, checked against its CID before anything
 * decodes it.
 *
 * Invariant: bytes returned hash to `cid` (a dag-cbor sha2-256 block within
 * the size limit); a block that cannot be had is a `BlockFetchError`, bad
 * bytes an `InvalidSnapshotError`.
 */

import toBuffer from 'it-to-buffer'
import { BlockFetchError } from '../errors.js'
import { withTimeout } from '../utils.js'
import { verifyBlock } from './format.js'
import type { BlockGetter } from '../engine/engine.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** Fetches a block, bounded by `timeout` ms (0: no bound), and checks it against its CID */
export async function fetchVerified (getter: BlockGetter, cid: CID, timeout: number, options?: AbortOptions): Promise<Uint8Array> {
  let bytes: Uint8Array
  try {
    bytes = await withTimeout(options?.signal, timeout, async signal => toBuffer(getter.get(cid, { signal })))
  } catch (err: any) {
    options?.signal?.throwIfAborted()
    throw new BlockFetchError(`Could not fetch snapshot block ${cid}: ${err.message}`, { cause: err })
  }
  await verifyBlock(cid, bytes)
  return bytes
}
