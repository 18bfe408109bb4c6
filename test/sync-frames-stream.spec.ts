/**
 * Frames over real libp2p streams (two nodes, memory transport, yamux):
 * a writer waits for every stall of the stream, not only the first, and a
 * reader that pauses and resumes a stream takes every frame of a burst far
 * larger than its high-water mark.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { expect } from 'aegir/chai'
import { drained, FrameReader, FrameWriter, writeFrame } from '../src/helia/sync/frames.js'
import { createReplicaNode } from '../src/node/index.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { Stream } from '@libp2p/interface'

const PROTOCOL = '/datastore-crdt-test/frames/1'

/** Whether `p` settles within `ms` */
async function settlesWithin (p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<false>(resolve => { timer = setTimeout(() => { resolve(false) }, ms) })
  try {
    return await Promise.race([p.then(() => true, () => true), late])
  } finally {
    clearTimeout(timer)
  }
}

describe('frames over libp2p streams', function () {
  this.timeout(30_000)
  let a: ReplicaNode
  let b: ReplicaNode
  let served: Promise<Stream>
  let client: Stream
  let n = 0

  beforeEach(async () => {
    n++
    a = await createReplicaNode({ listen: [`/memory/frames-a-${n}`] })
    b = await createReplicaNode({ listen: [`/memory/frames-b-${n}`] })
    served = new Promise(resolve => {
      void a.libp2p.handle(PROTOCOL, (stream) => { resolve(stream) })
    })
    client = await b.libp2p.dialProtocol(multiaddr(`/memory/frames-a-${n}`), PROTOCOL)
  })

  afterEach(async () => {
    await a?.stop()
    await b?.stop()
  })

  /** Writes 64 KB frames until one waits (more than 100 ms); false if none did in `max` writes */
  async function writeUntilStalled (max: number): Promise<{ stalled: boolean, pending?: Promise<void> }> {
    const frame = new Uint8Array(64 * 1024)
    for (let i = 0; i < max; i++) {
      const write = writeFrame(client, frame)
      if (!(await settlesWithin(write, 100))) return { stalled: true, pending: write }
    }
    return { stalled: false }
  }

  it('waits for the stream to drain at every stall, not only the first', async () => {
    const server = await served
    // the receiver reads nothing: its window runs out and the writer stalls
    server.pause()
    const first = await writeUntilStalled(200)
    expect(first.stalled, 'the first stall').to.equal(true)
    server.resume()
    expect(await settlesWithin(first.pending as Promise<void>, 5_000), 'released by the drain').to.equal(true)
    // again: stream.onDrain() of @libp2p/utils 7.4 resolves at once from here on
    server.pause()
    const second = await writeUntilStalled(200)
    expect(second.stalled, 'the second stall (a writer that does not wait would write all 200 frames)').to.equal(true)
    server.resume()
    expect(await settlesWithin(second.pending as Promise<void>, 5_000)).to.equal(true)
  })

  it('a write waiting for the drain rejects when the stream is aborted, or its signal aborts', async () => {
    const server = await served
    server.pause()
    const stalled = await writeUntilStalled(200)
    expect(stalled.stalled).to.equal(true)
    const aborted = new AbortController()
    const waiting = drained(client, { signal: aborted.signal })
    aborted.abort(new Error('caller gave up'))
    await expect(waiting).to.eventually.be.rejectedWith('caller gave up')
    client.abort(new Error('cut'))
    await expect(stalled.pending).to.eventually.be.rejected()
    await expect(drained(client)).to.eventually.be.rejected()
  })

  it('a reader that pauses far below the burst it is sent takes every frame, in order', async () => {
    const server = await served
    const reader = new FrameReader(server, { maxFrame: 4096, highWater: 16 * 1024, idleTimeout: 5_000 })
    const writer = new FrameWriter(client, 64 * 1024)
    const count = 12_000
    const frameOf = (i: number): Uint8Array => new Uint8Array(1000).fill(i % 251)
    // ~12 MB sent at once against a 16 KB mark: a pause that the stream's resume undid for the muxer
    // would let it buffer until it aborts the stream (its read buffer is capped at 4 MB)
    const sending = (async () => {
      for (let i = 0; i < count; i++) await writer.write(frameOf(i))
      await writer.flush()
      await client.close()
    })()
    for (let i = 0; i < count; i++) {
      const frame = await reader.next()
      expect(frame, `frame ${i}`).to.equalBytes(frameOf(i))
      // a slow consumer: the stream pauses and resumes many times
      if (i % 50 === 0) await new Promise(resolve => setTimeout(resolve, 1))
    }
    expect(await reader.next()).to.equal(undefined)
    await sending
    reader.dispose()
  })
})
