/**
 * A small libp2p protocol that lets a writer learn whether a peer has a
 * DAG node: the asker sends one CID, the answerer replies with one byte,
 * 1 when one of its running stores on that node has merged it, else 0. The
 * CLI's one-shot writes use it to wait until a peer has their write before
 * exiting. Requests are one length-prefixed CID of at most
 * `MAX_REQUEST_BYTES`; anything else closes the stream. go-ds-crdt peers do
 * not speak it: to them a writer can only tell that nobody answered.
 *
 * One handler serves every store of a libp2p node; it is registered with
 * the first store and removed with the last.
 */

import { lpStream } from '@libp2p/utils'
import { CID } from 'multiformats/cid'
import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'

export const MERGED_PROTOCOL = '/datastore-crdt/merged/1.0.0'

/** A CIDv1 sha2-256 is 36 bytes; this leaves room for other hashes */
const MAX_REQUEST_BYTES = 128

/** How long a request may take on the answering side (ms) */
const ANSWER_TIMEOUT = 5_000

/** What the protocol asks of a store */
export interface MergedQueryable {
  hasMerged(cid: CID, options?: AbortOptions): Promise<boolean>
}

type Node = Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol'>

const served = new WeakMap<Node, Set<MergedQueryable>>()

async function answer (stores: Set<MergedQueryable>, stream: Stream): Promise<void> {
  const signal = AbortSignal.timeout(ANSWER_TIMEOUT)
  const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
  try {
    const cid = CID.decode((await lp.read({ signal })).subarray())
    let merged = false
    for (const store of stores) {
      if (await store.hasMerged(cid, { signal }).catch(() => false)) {
        merged = true
        break
      }
    }
    await lp.write(Uint8Array.of(merged ? 1 : 0), { signal })
    await stream.close({ signal })
  } catch (err: any) {
    stream.abort(err)
  }
}

/** Answers merged-queries for `store` on `libp2p` until the returned function is called */
export async function serveMerged (libp2p: Node, store: MergedQueryable): Promise<() => Promise<void>> {
  let stores = served.get(libp2p)
  if (stores == null) {
    stores = new Set()
    served.set(libp2p, stores)
    const all = stores
    await libp2p.handle(MERGED_PROTOCOL, (stream) => answer(all, stream), { runOnLimitedConnection: false })
  }
  stores.add(store)
  return async () => {
    const current = served.get(libp2p)
    if (current == null || !current.delete(store) || current.size > 0) return
    served.delete(libp2p)
    await libp2p.unhandle(MERGED_PROTOCOL).catch(() => {})
  }
}

/** Whether `peer` has merged `cid`; rejects when the peer does not answer (or does not speak the protocol) */
export async function askMerged (libp2p: Node, peer: PeerId, cid: CID, options?: AbortOptions): Promise<boolean> {
  const stream = await libp2p.dialProtocol(peer, MERGED_PROTOCOL, options)
  try {
    const lp = lpStream(stream, { maxDataLength: 1 })
    await lp.write(cid.bytes, options)
    const reply = await lp.read(options)
    await stream.close(options).catch(() => {})
    return reply.length === 1 && reply.get(0) === 1
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}
