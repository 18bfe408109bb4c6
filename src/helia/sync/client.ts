/**
 * The asking side of the block-sync protocol, for one stream: sends the
 * request, then checks every block that comes back before handing it on.
 *
 * A block is accepted only when
 * - its frame is within the block size cap (checked before it is read),
 * - its CID is expected: one of the wanted CIDs, or a link of a block
 *   accepted earlier on this stream (so everything accepted is reachable
 *   from what was asked for, and nothing is accepted twice),
 * - its bytes hash to its CID and decode as a CRDT node (junk is never
 *   stored: the walker could only refuse it),
 * - and the stream is still within the request's block and byte limits.
 * The first block that fails any of these cuts the stream with a
 * `SyncProtocolError`; it and everything after it are dropped. Blocks
 * accepted before it were verified and are reachable from the request, so
 * they are kept, except those still waiting in the current batch. A peer
 * silent for `idleTimeout` is cut the same way. One delivery is stored
 * while the next frames are checked; `streamBlocks` settles only once it
 * has landed.
 *
 * Memory: the expected set holds the links of accepted blocks not yet
 * delivered, i.e. the walk's frontier (bounded by the request's limits).
 */

import { cidKey } from '../../codec/cid-key.js'
import { decodeNode } from '../../codec/dag-node.js'
import { verifyBlock } from '../../codec/verify-block.js'
import { SyncProtocolError, SyncRefusedError } from '../../errors.js'
import { FrameReader, writeFrame } from './frames.js'
import { decodeBlock, encodeRequest } from './protocol.js'
import type { FrameStream } from './frames.js'
import type { BlockRequest } from './protocol.js'
import type { DecodedNode } from '../../codec/dag-node.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

export interface StreamBlocksInit {
  /** Largest block accepted (bytes) */
  maxBlockSize: number
  /** Longest wait (ms) for the next block */
  idleTimeout: number
  /**
   * Stores accepted blocks, in arrival order (parents before children):
   * those that arrived together, up to `ACCEPT_BATCH`, in one call, each
   * with its decoded node. Reading goes on once it settles.
   */
  accept(blocks: AcceptedBlock[], options?: AbortOptions): Promise<void>
  /** Called when a CID becomes expected from this stream, with its map key (`cidKey`) */
  expect?(cid: CID, key: string): void
}

/** A block accepted from a stream: checked against its CID, and decoded */
export interface AcceptedBlock {
  cid: CID
  /** The CID's map key (`cidKey`), the string `expect` was given */
  key: string
  bytes: Uint8Array
  node: DecodedNode
}

export interface StreamBlocksResult {
  blocks: number
  bytes: number
  /** CIDs that were expected but not delivered when the stream ended */
  undelivered: CID[]
}

/** Frame bytes besides the block: CID, tags and lengths */
const FRAME_OVERHEAD = 128
/**
 * Blocks stored in one `accept` call at most. The batch being read and the
 * one being stored are held decoded together, and what is held across two
 * young collections is promoted: with 64, a 100k-node catch-up over TCP
 * peaked at 433-464 MB (6 of 6 runs), with 32 at 346-353 MB in 7 runs of
 * 9 (445 and 459 in the others) at the same rate (an in-process 30k
 * catch-up promoted 46 MB instead of 80). With 16 the peak was the same
 * and the rate lower.
 */
const ACCEPT_BATCH = 32

/**
 * Runs one request on an open stream. Resolves when the server ends the
 * stream or nothing more is expected; rejects with `SyncProtocolError` when
 * the server misbehaves (the caller aborts the stream), and with
 * `SyncRefusedError` when the server closed the stream before it took the
 * request.
 */
export async function streamBlocks (stream: FrameStream & { close(options?: AbortOptions): Promise<void> }, request: BlockRequest, init: StreamBlocksInit, options?: AbortOptions): Promise<StreamBlocksResult> {
  // keyed by cidKey (its bytes), never by the CID's base32 text (see cid-key.ts)
  const expected = new Map<string, CID>()
  const have = new Set(request.have.map(cidKey))
  const expect = (cid: CID, wanted = false): void => {
    const key = cidKey(cid)
    if ((!wanted && have.has(key)) || expected.has(key)) return
    expected.set(key, cid)
    init.expect?.(cid, key)
  }
  for (const cid of request.want) expect(cid, true)

  const reader = new FrameReader(stream, {
    maxFrame: init.maxBlockSize + FRAME_OVERHEAD,
    highWater: Math.max(init.maxBlockSize + FRAME_OVERHEAD, 1024 * 1024),
    idleTimeout: init.idleTimeout
  })
  let blocks = 0
  let bytes = 0
  let batch: AcceptedBlock[] = []
  // one delivery stored at a time, in order; the next frames are read,
  // hashed and decoded while it is (the disk write runs off the main thread)
  let storing: Promise<void> | undefined
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return
    const taken = batch
    batch = []
    await storing
    storing = init.accept(taken, options)
    // awaited by the next flush or at the end; not an unhandled rejection meanwhile
    storing.catch(() => {})
  }
  try {
    try {
      await writeFrame(stream, encodeRequest(request), options)
      await stream.close(options)
    } catch (err: any) {
      if (options?.signal?.aborted === true) throw err
      throw new SyncRefusedError('The peer closed the stream before taking the request', { cause: err })
    }
    while (expected.size > 0) {
      const frame = await reader.next(options)
      if (frame == null) break
      const block = decodeBlock(frame)
      const key = cidKey(block.cid)
      const cid = expected.get(key)
      if (cid == null) throw new SyncProtocolError(`Peer sent unrequested block ${block.cid}`)
      if (block.bytes.byteLength > init.maxBlockSize) throw new SyncProtocolError(`Peer sent block ${cid} of ${block.bytes.byteLength} bytes, over the limit of ${init.maxBlockSize}`)
      if (++blocks > request.maxBlocks) throw new SyncProtocolError(`Peer sent more than the ${request.maxBlocks} blocks asked for`)
      bytes += block.bytes.byteLength
      if (bytes > request.maxBytes && blocks > 1) throw new SyncProtocolError(`Peer sent more than the ${request.maxBytes} bytes asked for`)
      if (!(await verifyBlock(cid, block.bytes))) throw new SyncProtocolError(`Peer sent block ${cid} whose bytes do not match its hash`)
      const node = decodeSent(cid, block.bytes)
      expected.delete(key)
      for (const link of node.links) expect(link)
      batch.push({ cid, key, bytes: block.bytes, node })
      // stored together while more are already here, so the disk sees batches
      if (batch.length >= ACCEPT_BATCH || !reader.hasFrame()) await flush()
    }
    await flush()
    await storing
  } finally {
    reader.dispose()
    // a delivery still being stored when the stream failed: its blocks were checked, so it lands
    await storing?.catch(() => {})
  }
  return { blocks, bytes, undelivered: [...expected.values()] }
}

/** Decodes a block a peer sent; one that is no CRDT node cuts the stream */
function decodeSent (cid: CID, bytes: Uint8Array): DecodedNode {
  try {
    return decodeNode(cid, bytes)
  } catch (err: any) {
    throw new SyncProtocolError(`Peer sent block ${cid} that is not a CRDT node: ${err.message}`)
  }
}
