/**
 * Reading one block for the snapshot layer: `fetchVerified` through a
 * block getter (which may fetch it from peers), bounded in time, checked
 * against its CID before anything decodes it; `readLocalBlock` from local
 * storage only (compaction and the cover checks, which must never wait on
 * the network).
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
import type { DAGBlockstore } from '../interfaces.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/**
 * Fetches a block, bounded by `timeout` ms (0: no bound), and checks it
 * against its CID; a getter that is a blockstore then stores it unless it
 * has it. DAG syncers keep only blocks that decode as delta nodes (so junk
 * is never stored), never a snapshot's dag-cbor blocks: without this, an
 * install fetched every chunk twice, and a replica that passed another's
 * snapshot (having "every block of it here") could not serve it
 */
export async function fetchVerified (getter: BlockGetter & Partial<Pick<DAGBlockstore, 'has' | 'put'>>, cid: CID, timeout: number, options?: AbortOptions): Promise<Uint8Array> {
  let bytes: Uint8Array
  try {
    bytes = await withTimeout(options?.signal, timeout, async signal => toBuffer(getter.get(cid, { signal })))
  } catch (err: any) {
    options?.signal?.throwIfAborted()
    throw new BlockFetchError(`Could not fetch snapshot block ${cid}: ${err.message}`, { cause: err })
  }
  await verifyBlock(cid, bytes)
  if (typeof getter.put === 'function' && typeof getter.has === 'function' && !(await getter.has(cid, options))) {
    await getter.put(cid, bytes, options)
  }
  return bytes
}

/**
 * A block's bytes when it is stored here, else undefined: `getLocal()` when
 * the getter has it (the block-sync protocol's blockstore: its `get()`
 * ignores `offline` and asks peers, which for a block compacted away on
 * every peer waits until aborted), else one `get()` with `offline` set
 * (Helia's blockstore then never asks the network; a store that only
 * stores locally says NotFoundError), not `has()` then `get()`. Other
 * errors are thrown.
 */
export async function readLocalBlock (getter: BlockGetter & Partial<Pick<DAGBlockstore, 'getLocal'>>, cid: CID, options?: AbortOptions): Promise<Uint8Array | undefined> {
  if (typeof getter.getLocal === 'function') return (await getter.getLocal(cid, options))?.bytes
  try {
    return await toBuffer(getter.get(cid, { ...options, offline: true } as AbortOptions))
  } catch (err: any) {
    if (err?.name === 'NotFoundError') return undefined
    throw err
  }
}
