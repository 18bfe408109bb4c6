/**
 * Head blocks carried by broadcasts that arrive together are stored
 * together: the receive loop reads on while a write is under way, then
 * stores what it read in one `putMany` (one LevelDB batch through the
 * syncing blockstore) before it queues those payloads' heads. Bounded
 * read-ahead, one block per head carried twice, and a failing `putMany`
 * that costs nothing.
 */

import { defaultLogger } from '@libp2p/logger'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { LevelBlockstore } from 'blockstore-level'
import { Key } from 'interface-datastore'
import toBuffer from 'it-to-buffer'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { encodeBroadcastWithBlocks } from '../src/codec/broadcast-blocks.js'
import { PayloadQueue } from '../src/engine/payload-queue.js'
import { MAX_ARRIVING, MAX_ARRIVING_BYTES } from '../src/engine/replicator.js'
import { syncingBlockstore } from '../src/helia/sync/syncing-blockstore.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { enc, memoryReplica, tempDir } from './fixtures/stores.js'
import type { DAGBlockstore } from '../src/interfaces.js'
import type { AbortOptions } from 'interface-store'

/** A memory blockstore whose writes wait for `release()`, recording every write and every read of a block it lacks */
class HeldBlockstore implements DAGBlockstore {
  readonly inner = new MemoryBlockstore()
  /** CIDs of each `putMany` call */
  readonly groups: CID[][] = []
  /** Bytes of each `putMany` call */
  readonly groupBytes: number[] = []
  puts = 0
  /** Reads of blocks not stored (yet) */
  misses = 0
  failMany = false
  /** has() throws this many more times */
  failHas = 0
  private held: Promise<void>
  private open!: () => void

  constructor () {
    this.held = new Promise(resolve => { this.open = resolve })
  }

  release (): void {
    this.open()
  }

  async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    if (!(await this.inner.has(cid))) this.misses++
    yield * this.inner.get(cid, options)
  }

  async has (cid: CID): Promise<boolean> {
    if (this.failHas > 0) {
      this.failHas--
      throw new Error('the disk is gone for a moment')
    }
    return this.inner.has(cid)
  }

  async put (cid: CID, bytes: Uint8Array): Promise<void> {
    await this.held
    this.puts++
    await this.inner.put(cid, bytes)
  }

  async * putMany (source: Iterable<{ cid: CID, bytes: Uint8Array }>): AsyncGenerator<CID> {
    const blocks = [...source]
    this.groups.push(blocks.map(b => b.cid))
    this.groupBytes.push(blocks.reduce((sum, b) => sum + b.bytes.byteLength, 0))
    await this.held
    if (this.failMany) throw new Error('this disk takes one block at a time')
    for (const { cid, bytes } of blocks) await this.inner.put(cid, bytes)
    for (const { cid } of blocks) yield cid
  }
}

/** `count` puts of a writer, each as the broadcast that announced it with its block, oldest first */
async function chainPayloads (count: number, padding = 0): Promise<{ payloads: Uint8Array[], expected: string[] }> {
  const source = await memoryReplica({ repairInterval: 0 })
  const payloads: Uint8Array[] = []
  const expected: string[] = []
  try {
    for (let i = 0; i < count; i++) {
      // keys beyond ASCII: the Latin-1 edge, CJK and an astral character
      const key = `/ÿ-日本-𝄞-${i}`
      const value = `値 ${i}`.padEnd(padding, '.')
      await source.store.put(new Key(key), enc(value))
      expected.push(`${key}=${value}`)
      const [head] = source.store.heads()
      const bytes = await toBuffer(source.blockstore.get(head.cid))
      payloads.push(encodeBroadcastWithBlocks([head], [{ cid: head.cid, bytes }], 1 << 20))
    }
  } finally {
    await source.store.stop()
  }
  return { payloads, expected: expected.sort() }
}

/** A reader over `blockstore` fed by a payload queue it reads from as a Broadcaster */
async function reader (blockstore: DAGBlockstore, queue: PayloadQueue): Promise<Awaited<ReturnType<typeof memoryReplica>>> {
  const broadcaster = {
    broadcast: async () => {},
    next: async (options?: AbortOptions) => queue.next(options),
    nextPayload: async (options?: AbortOptions) => queue.nextPayload(options)
  }
  // nothing to fetch from: a head whose block is not stored in time stays missing
  return memoryReplica({ repairInterval: 0, dagSyncerTimeout: 1000, headTimeout: 1000 }, { broadcaster, blockstore })
}

/** Resolves once the queue's size stopped changing for a while (bounded) */
async function settled (queue: PayloadQueue): Promise<number> {
  let last = -1
  for (let round = 0; round < 100; round++) {
    await new Promise(resolve => setTimeout(resolve, 50))
    if (queue.size === last) return last
    last = queue.size
  }
  throw new Error('the reader kept reading')
}

interface HeldRun {
  blockstore: HeldBlockstore
  replica: Awaited<ReturnType<typeof memoryReplica>>
  /** Payloads the reader left with the Broadcaster once it stopped reading */
  waiting: number
}

/**
 * Hands `payloads` to a reader whose writes are held: the first payload's
 * block is then being written while the reader reads on, up to its bound.
 * Runs `test` once the reader stopped reading.
 */
async function heldRun (payloads: Uint8Array[], test: (run: HeldRun) => Promise<void>, setup?: (blockstore: HeldBlockstore) => void): Promise<void> {
  const queue = new PayloadQueue(1000, 16 << 20)
  const blockstore = new HeldBlockstore()
  setup?.(blockstore)
  const replica = await reader(blockstore, queue)
  try {
    for (const payload of payloads) queue.push(payload, { from: 'writer' })
    await test({ blockstore, replica, waiting: await settled(queue) })
  } finally {
    queue.close()
    await replica.store.stop()
  }
}

/** Lets the held writes go and waits until the reader holds exactly `expected` */
async function releaseAndMerge ({ blockstore, replica }: HeldRun, expected: string[]): Promise<void> {
  blockstore.release()
  await waitFor(async () => (await stateOf(replica.store)).length === expected.length, 20_000, 'every key merged')
  expect(await stateOf(replica.store)).to.deep.equal(expected)
}

describe('carried blocks stored together', function () {
  this.timeout(60_000)

  it('stores the blocks of payloads read during a write in one putMany, before their heads are queued', async () => {
    const { payloads, expected } = await chainPayloads(40)
    await heldRun(payloads, async run => {
      // the first payload's block is being written: the reader read every other one meanwhile
      expect(run.waiting).to.equal(0)
      expect(run.blockstore.puts).to.equal(0)
      await releaseAndMerge(run, expected)
      // one put for the first payload, then one putMany for the 39 read while it waited
      expect(run.blockstore.puts).to.equal(1)
      expect(run.blockstore.groups.map(g => g.length)).to.deep.equal([39])
      // every head found its block stored (or handed over) when its turn came: nothing was read that was not there
      expect(run.blockstore.misses).to.equal(0)
    })
  })

  it('reads at most MAX_ARRIVING payloads ahead of the write that stores their blocks', async () => {
    const count = MAX_ARRIVING * 2 + 20
    const { payloads, expected } = await chainPayloads(count)
    await heldRun(payloads, async run => {
      // one payload in the write under way, MAX_ARRIVING read ahead, the rest left with the Broadcaster
      expect(run.waiting).to.equal(count - 1 - MAX_ARRIVING)
      await releaseAndMerge(run, expected)
      expect(run.blockstore.groups.length).to.be.greaterThan(0)
      for (const group of run.blockstore.groups) expect(group.length).to.be.at.most(MAX_ARRIVING)
      expect(run.blockstore.misses).to.equal(0)
    })
  })

  it('reads at most MAX_ARRIVING_BYTES of payloads ahead, and stores at most that much at once', async () => {
    const { payloads, expected } = await chainPayloads(20, 150_000)
    // one payload in the write under way, then as many as it takes to reach the bound
    let ahead = 0
    for (let bytes = 0; bytes < MAX_ARRIVING_BYTES; ahead++) bytes += payloads[1 + ahead].byteLength
    expect(ahead).to.be.within(2, 18)
    await heldRun(payloads, async run => {
      expect(run.waiting).to.equal(payloads.length - 1 - ahead)
      await releaseAndMerge(run, expected)
      expect(run.blockstore.groups.length).to.be.greaterThan(1)
      for (const bytes of run.blockstore.groupBytes) expect(bytes).to.be.at.most(MAX_ARRIVING_BYTES)
      expect(run.blockstore.misses).to.equal(0)
    })
  })

  it('stores a head carried twice in one group once', async () => {
    const { payloads, expected } = await chainPayloads(3)
    // the second and third announcements each come twice (an announcement and a rebroadcast)
    await heldRun([payloads[0], payloads[1], payloads[1], payloads[2], payloads[2]], async run => {
      expect(run.waiting).to.equal(0)
      await releaseAndMerge(run, expected)
      expect(run.blockstore.groups).to.have.lengthOf(1)
      const group = run.blockstore.groups[0].map(cid => cid.toString())
      expect(group).to.have.lengthOf(2)
      expect(new Set(group).size).to.equal(2)
    })
  })

  it('stores the blocks one by one when putMany fails, losing nothing', async () => {
    const { payloads, expected } = await chainPayloads(12)
    await heldRun(payloads, async run => {
      expect(run.waiting).to.equal(0)
      await releaseAndMerge(run, expected)
      expect(run.blockstore.groups.map(g => g.length)).to.deep.equal([11])
      // the first payload's put, then the failed group's blocks one by one
      expect(run.blockstore.puts).to.equal(12)
      expect(run.blockstore.misses).to.equal(0)
    }, blockstore => { blockstore.failMany = true })
  })

  it('a group whose blocks cannot be stored still has its heads handled (fetched instead)', async () => {
    const { payloads } = await chainPayloads(6)
    await heldRun(payloads, async ({ blockstore, replica, waiting }) => {
      expect(waiting).to.equal(0)
      // the second group's hash checks ask has() first: it throws
      blockstore.failHas = 1
      blockstore.release()
      // every payload had its turn: the five heads of the failed group were fetched (from nowhere) and given up
      await replica.store.synced({ signal: AbortSignal.timeout(20_000) })
      expect(blockstore.puts).to.equal(1)
      expect(blockstore.groups).to.deep.equal([])
      expect(blockstore.misses).to.be.greaterThan(0)
    })
  })

  it('the syncing blockstore writes a putMany as one LevelDB batch and announces it once', async () => {
    const dir = await tempDir('carried-groups-level')
    const level = new LevelBlockstore(dir.path)
    await level.open()
    try {
      let batches = 0
      const batch = level.db.batch.bind(level.db)
      level.db.batch = ((...args: any[]) => { batches++; return (batch as any)(...args) }) as any
      const announced: CID[][] = []
      const store = syncingBlockstore({
        local: level,
        fallback: new MemoryBlockstore(),
        announce: async cids => { announced.push(cids) },
        libp2p: {
          getConnections: () => [],
          dialProtocol: async () => { throw new Error('no network here') },
          peerStore: { get: async () => { throw new Error('no peers here') } }
        },
        logger: defaultLogger()
      })
      const blocks = await Promise.all(['一', 'two', '𝄞'].map(async text => {
        const bytes = enc(text)
        return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
      }))
      const yielded: string[] = []
      for await (const cid of store.putMany?.(blocks) ?? []) yielded.push(cid.toString())
      expect(yielded).to.deep.equal(blocks.map(b => b.cid.toString()))
      expect(batches).to.equal(1)
      expect(announced.map(cids => cids.map(c => c.toString()))).to.deep.equal([yielded])
      for (const { cid, bytes } of blocks) expect(await toBuffer(level.get(cid))).to.deep.equal(bytes)
    } finally {
      await level.close()
      await dir.remove()
    }
  })
})
