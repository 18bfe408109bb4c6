/**
 * Attacks on the receive path by hostile peers (issue #20 items 1 and 4-10,
 * issue #12 items 5 and 8), each reproduced in-process with a fake
 * broadcaster or on 127.0.0.1, and the limits that now hold.
 */

import { readdir, stat } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { identity } from 'multiformats/hashes/identity'
import { sha256, sha512 } from 'multiformats/hashes/sha2'
import { MAX_BROADCAST_DAG_NAMES, MAX_BROADCAST_HEADS, MAX_BROADCAST_SIZE, splitBroadcast } from '../src/codec/broadcast.js'
import { CRDTBroadcast } from '../src/codec/pb/broadcast.js'
import { MAX_WAITING_PENALISED } from '../src/engine/head-queue.js'
import { PayloadQueue } from '../src/engine/payload-queue.js'
import { createHeliaCRDT } from '../src/helia/index.js'
import { pubsubBroadcaster } from '../src/helia/pubsub-broadcaster.js'
import { decodeBroadcast, decodeNode, encodeBroadcast, encodeNode } from '../src/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { AnnouncerBroadcaster } from './fixtures/announcer-broadcaster.js'
import { missingCid, StallingBlockstore } from './fixtures/hostile-blocks.js'
import { stateOf, waitFor } from './fixtures/network.js'
import { dec, enc, memoryReplica, readBlock, tempDir } from './fixtures/stores.js'
import type { CRDTDatastoreInit } from '../src/index.js'
import type { MemoryReplica } from './fixtures/stores.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { AbortOptions } from 'interface-store'

const key = (s: string): Key => new Key(s)

/** A node with one put and no links, stored in `blockstore` */
async function storedNode (blockstore: { put(cid: CID, bytes: Uint8Array): unknown }, k: string, v: string, links: CID[] = [], priority = 1): Promise<CID> {
  const node = await encodeNode({ elements: [{ key: k, id: '', value: enc(v) }], tombstones: [], priority, dagName: '' }, links)
  await blockstore.put(node.cid, node.bytes)
  return node.cid
}

/** A blockstore whose fetches of missing blocks fail at once, naming `refusedBy` as the peers asked that lack them */
class RefusingBlockstore extends MemoryBlockstore {
  private readonly fetches = new Map<string, number>()

  constructor (private readonly refusedBy: string[]) {
    super()
  }

  /** Fetches of `cid` that found it missing */
  fetchesOf (cid: CID): number {
    return this.fetches.get(cid.toString()) ?? 0
  }

  override async * get (cid: CID, options?: AbortOptions): AsyncGenerator<Uint8Array> {
    if (await super.has(cid)) {
      yield * super.get(cid, options)
      return
    }
    this.fetches.set(cid.toString(), this.fetchesOf(cid) + 1)
    throw Object.assign(new Error(`no peer sent ${cid}`), { refusedBy: this.refusedBy })
  }
}

/** Bytes of every file under `dir` */
async function dirSize (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size
  }
  return total
}

const announce = (cids: CID[], dagName = ''): Uint8Array => encodeBroadcast(cids.map(cid => ({ cid, dagName })))

describe('hostile peers: the receive path', function () {
  this.timeout(60_000)
  const cleanup: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  async function replica (init: CRDTDatastoreInit = {}, joins = true): Promise<MemoryReplica & { blockstore: StallingBlockstore, net: AnnouncerBroadcaster }> {
    const blockstore = new StallingBlockstore()
    const net = new AnnouncerBroadcaster({ joins })
    const r = await memoryReplica({ repairInterval: 0, ...init }, { blockstore, broadcaster: net })
    cleanup.push(async () => {
      await r.store.stop()
      net.close()
    })
    return { ...r, blockstore, net }
  }

  it('#20.1: a head nobody has does not hold up an honest write announced after it', async () => {
    // the head deadline is long here, so only walking outside the receive loop lets the honest write through
    const r = await replica({ dagSyncerTimeout: 30_000, headTimeout: 30_000 })
    r.net.deliver(announce([await missingCid('bogus')]), 'evil')
    await waitFor(() => r.blockstore.stalls === 1, 5000, 'the bogus head to be asked for')
    const honest = await storedNode(r.blockstore, '/honest', 'arrives')
    r.net.deliver(announce([honest]), 'good')
    await waitFor(async () => (await stateOf(r.store)).includes('/honest=arrives'), 10_000, 'the honest write')
    // the bogus head is still being waited for, and stats() says so
    expect(r.blockstore.aborted).to.equal(0)
    expect(r.store.stats().headsInFlight).to.equal(1)
    expect(r.store.stats().queuedJobs).to.be.greaterThan(0)
  })

  it('#20.1: an announced head gets headTimeout, not dagSyncerTimeout', async () => {
    const r = await replica({ dagSyncerTimeout: 30_000, headTimeout: 200 })
    const receiving = r.store.receive(announce([await missingCid('short')]))
    await Promise.race([receiving, new Promise(resolve => setTimeout(resolve, 10_000))])
    expect(r.blockstore.aborted).to.equal(1)
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('#20.1: a flood of bogus heads from one announcer leaves turns for others and gets it deprioritised', async () => {
    const r = await replica({ numWorkers: 1, headTimeout: 150, dagSyncerTimeout: 5000 })
    const bogus = await Promise.all(Array.from({ length: 40 }, async (_, i) => missingCid(`flood-${i}`)))
    r.net.deliver(announce(bogus), 'evil')
    await waitFor(() => r.blockstore.stalls > 0, 5000, 'the flood to be fetched')
    const first = await storedNode(r.blockstore, '/first', '1')
    r.net.deliver(announce([first]), 'good')
    await waitFor(async () => (await stateOf(r.store)).includes('/first=1'), 10_000, 'the first honest write')
    // served in turn, long before the flood is through
    expect(r.store.stats().queuedHeads).to.be.greaterThan(20)
    await waitFor(() => r.store.stats().penalisedAnnouncers === 1, 10_000, 'the flooder to be deprioritised')
    // deprioritised, it keeps only its newest heads waiting: the rest of the flood is dropped, not fetched one by one
    expect(r.store.stats().queuedHeads).to.be.at.most(MAX_WAITING_PENALISED)
    expect(r.store.stats().droppedHeads).to.be.greaterThan(0)
    const second = await storedNode(r.blockstore, '/second', '2')
    r.net.deliver(announce([second]), 'good')
    await waitFor(async () => (await stateOf(r.store)).includes('/second=2'), 10_000, 'the second honest write')
    expect(r.store.stats().queuedHeads).to.be.greaterThan(0)
    // a deprioritised announcer has at most one head in flight
    expect(r.store.stats().headsInFlight).to.be.at.most(1)
  })

  it('#20.1: an honest head queued behind a flood is taken at once when an announcer in good standing announces it too', async () => {
    const r = await replica({ numWorkers: 1, headTimeout: 500, dagSyncerTimeout: 5000 })
    // the first two heads take the flooder's two slots at once; the honest head is then its oldest waiting:
    // served last, one head deadline after another, once the flooder is deprioritised
    const honest = await encodeNode({ elements: [{ key: '/honest', id: '', value: enc('queued') }], tombstones: [], priority: 1, dagName: '' }, [])
    const bogus = await Promise.all(Array.from({ length: MAX_WAITING_PENALISED - 1 }, async (_, i) => missingCid(`queued-${i}`)))
    r.net.deliver(announce([...bogus.slice(0, 2), honest.cid, ...bogus.slice(2)]), 'evil')
    await waitFor(() => r.store.stats().penalisedAnnouncers === 1, 10_000, 'the flooder to be deprioritised')
    // the honest writer announces it too: its block is there now
    await r.blockstore.put(honest.cid, honest.bytes)
    r.net.deliver(announce([honest.cid]), 'good')
    await waitFor(async () => (await stateOf(r.store)).includes('/honest=queued'), 10_000, 'the honest head')
    // merged while the flood still waits: it left the flooder's queue
    expect(r.store.stats().queuedHeads).to.be.greaterThan(3)
  })

  it('#12.5: a node linking 60 missing blocks costs one shared deadline, and other walks go on', async () => {
    const r = await replica({ numWorkers: 5, dagSyncerTimeout: 400 })
    const missing = await Promise.all(Array.from({ length: 60 }, async (_, i) => missingCid(`child-${i}`)))
    const bad = await storedNode(r.blockstore, '/bad', 'top', missing, 2)
    const honestChild = await storedNode(r.blockstore, '/honest/child', 'c')
    const honest = await storedNode(r.blockstore, '/honest/top', 't', [honestChild], 2)
    r.net.deliver(announce([bad]), 'evil')
    r.net.deliver(announce([honest]), 'good')
    await waitFor(async () => (await stateOf(r.store)).includes('/honest/child=c'), 10_000, 'the honest branch')
    await waitFor(() => r.store.stats().walks === 0 && r.store.stats().headsInFlight === 0, 20_000, 'the bad walk to end')
    // each missing link was not given a deadline of its own: only the first few were waited for
    expect(r.blockstore.stalls).to.be.at.most(15)
    // the bad node waits for links that could allow its claim: it is the one pending branch
    expect((await r.store.pendingBranches()).map(String)).to.deep.equal([bad.toString()])
    expect(await r.store.isDirty()).to.equal(true)
  })

  it('#12.8: every head of a broadcast is adopted by a replica with no heads, not only the first', async () => {
    const r = await replica({ numWorkers: 1, dagSyncerTimeout: 3000 })
    // A links a missing block: its walk holds the only worker while B waits its turn
    const a = await storedNode(r.blockstore, '/a', 'a', [await missingCid('under-a')], 2)
    const b = await storedNode(r.blockstore, '/b', 'b', [await missingCid('under-b')], 2)
    r.net.deliver(announce([a, b]), 'writer')
    await waitFor(() => r.blockstore.stalls === 1, 5000, 'the walk of a to wait for its child')
    await r.store.put(key('/mine'), enc('m'))
    const [head] = r.store.heads()
    const mine = decodeNode(head.cid, await readBlock(r.blockstore, head.cid))
    expect(mine.links.map(String).sort()).to.deep.equal([a, b].map(String).sort())
  })

  it('#20.4: only usable CIDs are accepted, duplicates go in linear time, limits hold, errors quote nothing', async () => {
    const data = enc('x')
    const usable = CID.createV1(0x70, await sha256.digest(data))
    const refused = [
      CID.createV1(0x70, identity.digest(enc('inline'))),
      CID.createV1(0x70, await sha512.digest(data)),
      CID.createV1(0x55, await sha256.digest(data))
    ]
    for (const cid of refused) {
      expect(() => decodeBroadcast(announce([cid])), cid.toString()).to.throw().with.property('name', 'MalformedBroadcastError')
    }
    // a truncated digest: sha2-256 code, 20-byte digest
    const truncated = Uint8Array.from([0x01, 0x70, 0x12, 20, ...new Uint8Array(20).fill(7)])
    expect(() => decodeBroadcast(CRDTBroadcast.encode({ Heads: [{ Below: [], Cid: truncated, DagName: '' }] }))).to.throw().with.property('name', 'MalformedBroadcastError')
    // 1,024 copies of one head decode to one
    expect(decodeBroadcast(announce(Array(MAX_BROADCAST_HEADS).fill(usable))).get('')).to.have.lengthOf(1)
    // too many DAG names, too large a payload
    const names = Array.from({ length: MAX_BROADCAST_DAG_NAMES + 1 }, (_, i) => ({ cid: usable, dagName: `d${i}` }))
    expect(() => decodeBroadcast(encodeBroadcast(names))).to.throw().with.property('name', 'MalformedBroadcastError')
    expect(() => decodeBroadcast(new Uint8Array(MAX_BROADCAST_SIZE + 1))).to.throw().with.property('name', 'MalformedBroadcastError')
    // untrusted bytes never reach an error message
    const sneaky = CID.createV1(0x70, await sha512.digest(enc('\u001b[2J')))
    try {
      decodeBroadcast(encodeBroadcast([{ cid: sneaky, dagName: '\u001b[2Jname' }]))
      expect.fail('decoded')
    } catch (err: any) {
      expect(err.message).to.not.include(sneaky.toString())
      expect(err.message).to.not.include('\u001b')
    }
  })

  it('#20.4: the pubsub validator refuses oversized payloads unread and hands the decoded heads on', async () => {
    const listeners: Array<(evt: any) => void> = []
    const validators = new Map<string, any>()
    const pubsub = {
      subscribe () {},
      unsubscribe () {},
      publish: async () => {},
      addEventListener: (_: string, l: any) => { listeners.push(l) },
      removeEventListener () {},
      topicValidators: validators
    }
    const b = pubsubBroadcaster({ pubsub }, { topic: 't' })
    try {
      const validate = validators.get('t')
      expect(validate(undefined, { topic: 't', data: new Uint8Array(MAX_BROADCAST_SIZE + 1) })).to.equal('reject')
      const cid = await missingCid('decoded once')
      const message = { topic: 't', data: announce([cid]), from: { toString: () => 'peer-a' } }
      expect(validate(undefined, message)).to.equal('accept')
      for (const l of listeners) l({ detail: message })
      const payload = await b.nextPayload?.()
      expect(payload?.from).to.equal('peer-a')
      expect(payload?.heads?.get('')?.map(String)).to.deep.equal([cid.toString()])
    } finally {
      await b.stop()
    }
  })

  it('#20.5: payload queues are bounded by bytes as well as count', async () => {
    const queue = new PayloadQueue(1024, 4 * 1024 * 1024)
    for (let i = 0; i < 100; i++) queue.push(new Uint8Array(1024 * 1024).fill(i))
    expect(queue.bytes).to.be.at.most(4 * 1024 * 1024)
    expect(queue.size).to.equal(4)
    expect(queue.dropped).to.equal(96)
    // the newest are kept
    expect((await queue.next())[0]).to.equal(96)
    queue.push(new Uint8Array(5 * 1024 * 1024))
    expect(queue.dropped).to.equal(97)
    queue.close()
  })

  it('#20.6: one broadcast cannot start unbounded fetches, with or without multiHeadProcessing', async () => {
    for (const multiHeadProcessing of [false, true]) {
      let inFlight = 0
      let maxInFlight = 0
      const blockstore = new StallingBlockstore()
      const get = blockstore.get.bind(blockstore)
      blockstore.get = async function * (cid, options) {
        inFlight++
        maxInFlight = Math.max(maxInFlight, inFlight)
        try {
          yield * get(cid, options)
        } finally {
          inFlight--
        }
      }
      const r = await memoryReplica({ repairInterval: 0, numWorkers: 2, headTimeout: 50, multiHeadProcessing }, { blockstore })
      try {
        // 1,024 DAG names in one broadcast: refused outright
        const many = await Promise.all(Array.from({ length: 1024 }, async (_, i) => ({ cid: await missingCid(`name-${i}`), dagName: `dag${i}` })))
        await r.store.receive(encodeBroadcast(many))
        expect(blockstore.stalls).to.equal(0)
        // 64 names x 4 heads: fetched a bounded number at a time
        const heads = await Promise.all(Array.from({ length: 256 }, async (_, i) => ({ cid: await missingCid(`wide-${i}`), dagName: `dag${i % 64}` })))
        await r.store.receive(encodeBroadcast(heads))
        expect(blockstore.stalls).to.equal(256)
        expect(maxInFlight, `multiHeadProcessing ${String(multiHeadProcessing)}`).to.be.at.most(2 * 4)
      } finally {
        await r.store.stop()
      }
    }
  })

  it('#20.7: a block refused at decode or for its size is not kept', async () => {
    const r = await replica({ maxBlockSize: 4096 })
    // a valid node over the size limit
    const big = await storedNode(r.blockstore, '/big', 'x'.repeat(8000))
    // bytes that are no node under a dag-pb CID
    const junkBytes = new Uint8Array(2000).fill(0xff)
    const junk = CID.createV1(0x70, await sha256.digest(junkBytes))
    await r.blockstore.put(junk, junkBytes)
    await r.store.receive(announce([big, junk]))
    expect(await stateOf(r.store)).to.deep.equal([])
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('#20.8: a link that never arrives is given up after maxFetchAttempts, recorded, and the store turns clean', async () => {
    const r = await replica({ dagSyncerTimeout: 100, maxFetchAttempts: 3 })
    const lostNode = await encodeNode({ elements: [{ key: '/lost', id: '', value: enc('found') }], tombstones: [], priority: 1, dagName: '' }, [])
    // top waits for its link (the link's claim bounds top's): top is the branch pending, counted, given up
    const top = await storedNode(r.blockstore, '/top', 't', [lostNode.cid], 2)
    await r.store.receive(announce([top]))
    expect((await r.store.pendingBranches()).map(String)).to.deep.equal([top.toString()])
    expect(await r.store.isDirty()).to.equal(true)
    for (let i = 0; i < 2; i++) await r.store.repair().catch(() => {})
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
    expect(r.store.stats().givenUpBranches).to.equal(1)
    await r.store.repair()
    expect(await r.store.isDirty()).to.equal(false)
    expect(r.blockstore.stalls).to.equal(3)
    expect((await r.store.givenUpBranches()).map(b => b.cid.toString())).to.deep.equal([top.toString()])
    // a later node linking it revives it, and its link arrived meanwhile
    const again = await storedNode(r.blockstore, '/again', 'a', [top], 3)
    await r.blockstore.put(lostNode.cid, lostNode.bytes)
    await r.store.receive(announce([again]))
    expect(dec(await r.store.get(key('/top')))).to.equal('t')
    expect(dec(await r.store.get(key('/lost')))).to.equal('found')
    expect(await r.store.givenUpBranches()).to.have.lengthOf(0)
  })

  it('#20.8: a branch given up is tried again now and then, so one lost to a long partition comes back', async () => {
    // every GIVEN_UP_RETRY_EVERY (24) repair ticks of 20 ms
    const r = await replica({ dagSyncerTimeout: 100, maxFetchAttempts: 1, repairInterval: 20 })
    const lostNode = await encodeNode({ elements: [{ key: '/late', id: '', value: enc('back') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await storedNode(r.blockstore, '/top', 't', [lostNode.cid], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
    await r.blockstore.put(lostNode.cid, lostNode.bytes)
    await waitFor(async () => (await stateOf(r.store)).includes('/late=back'), 10_000, 'the given-up branch to be retried')
    await waitFor(async () => !(await r.store.isDirty()), 5000, 'the store to be clean')
  })

  it('#20.8: without join notifications, a branch given up is tried again soon after an announcer (re)appears, not only every GIVEN_UP_RETRY_EVERY ticks', async () => {
    // the periodic retry would come after 24 ticks of 250 ms: 6 s
    const r = await replica({ dagSyncerTimeout: 100, maxFetchAttempts: 1, repairInterval: 250 }, false)
    const lostNode = await encodeNode({ elements: [{ key: '/late', id: '', value: enc('back') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await storedNode(r.blockstore, '/top', 't', [lostNode.cid], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    // top waited for its link, and was given up with it
    expect((await r.store.givenUpBranches()).map(b => b.cid.toString())).to.deep.equal([top.toString()])
    // the partition heals: the writer is reachable again and announces its heads
    await r.blockstore.put(lostNode.cid, lostNode.bytes)
    r.net.deliver(announce([top]), 'writer')
    await waitFor(async () => (await stateOf(r.store)).includes('/late=back'), 4000, 'the given-up branch to be retried')
    expect(await r.store.givenUpBranches()).to.have.lengthOf(0)
  })

  it('#20.8: without join notifications, an announcer that (re)appears revives only the branches it was not asked for', async () => {
    // every fetch of a missing block fails at once, naming 'writer' as the peer asked that lacks it
    const blockstore = new RefusingBlockstore(['writer'])
    const net = new AnnouncerBroadcaster({ joins: false })
    // the periodic retry of everything would come after 24 ticks of 200 ms: 4.8 s
    const r = await memoryReplica({ maxFetchAttempts: 1, repairInterval: 200 }, { blockstore, broadcaster: net })
    cleanup.push(async () => {
      await r.store.stop()
      net.close()
    })
    const missing = await missingCid('asked-writer')
    const top = await storedNode(blockstore, '/top', 't', [missing], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    expect((await r.store.givenUpBranches())[0].refusedBy).to.deep.equal(['writer'])
    const fetches = blockstore.fetchesOf(missing)
    // the peer that said it lacks the block is heard for the first time: its heads are merged, the junk stays given up
    net.deliver(announce([await storedNode(blockstore, '/writer', 'w')]), 'writer')
    await waitFor(async () => (await stateOf(r.store)).includes('/writer=w'), 2000, 'the writer\'s head to be merged')
    await new Promise(resolve => setTimeout(resolve, 1200))
    expect(blockstore.fetchesOf(missing)).to.equal(fetches)
    expect(r.store.stats().givenUpBranches).to.equal(1)
    // a newcomer was never asked: it may hold the block, so the branch is tried again soon (not at the periodic retry)
    net.deliver(announce([await storedNode(blockstore, '/newcomer', 'n')]), 'newcomer')
    await waitFor(() => blockstore.fetchesOf(missing) > fetches, 2000, 'the branch to be tried again')
    await waitFor(async () => (await r.store.pendingBranches()).length === 0, 5000, 'the retry to end')
  })

  it('#20.8: with join notifications, an announcer heard for the first time revives nothing; a replica that joins does', async () => {
    // in a quiet cluster a replica whose heads others announced first stays silent: its next announcement is no return
    const blockstore = new RefusingBlockstore(['writer'])
    const net = new AnnouncerBroadcaster()
    const r = await memoryReplica({ maxFetchAttempts: 1, repairInterval: 200 }, { blockstore, broadcaster: net })
    cleanup.push(async () => {
      await r.store.stop()
      net.close()
    })
    const missing = await missingCid('silent-announcer')
    await r.store.receive(announce([await storedNode(blockstore, '/top', 't', [missing], 2)]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    const fetches = blockstore.fetchesOf(missing)
    net.deliver(announce([await storedNode(blockstore, '/quiet', 'q')]), 'quiet')
    await waitFor(async () => (await stateOf(r.store)).includes('/quiet=q'), 2000, 'the quiet replica\'s head to be merged')
    await new Promise(resolve => setTimeout(resolve, 1200))
    expect(blockstore.fetchesOf(missing)).to.equal(fetches)
    expect(await r.store.isDirty()).to.equal(false)
    // the same replica joining the topic (a restart, a healed partition) does revive it: it was never asked
    net.join('quiet')
    await waitFor(() => blockstore.fetchesOf(missing) > fetches, 2000, 'the branch to be tried again')
    await waitFor(async () => (await r.store.pendingBranches()).length === 0, 5000, 'the retry to end')
  })

  it('#20.8: a branch given up is tried again as soon as a replica joins the topic, even one never silent as an announcer', async () => {
    // the periodic retry would come after 24 ticks of 400 ms: 9.6 s; no announcer ever falls silent here
    const r = await replica({ dagSyncerTimeout: 100, maxFetchAttempts: 1, repairInterval: 400 })
    const lostNode = await encodeNode({ elements: [{ key: '/late', id: '', value: enc('back') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await storedNode(r.blockstore, '/top', 't', [lostNode.cid], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    await waitFor(async () => !(await r.store.isDirty()), 5000, 'the store to be clean with the branch given up')
    // a replica joins that does not hold it: dirty at once, so nothing looks settled while the branch waits for its retry
    r.net.join('other')
    await waitFor(async () => r.store.isDirty(), 2000, 'the store to be dirty after the join')
    await waitFor(async () => !(await r.store.isDirty()) && r.store.stats().givenUpBranches === 2, 5000, 'the retry to fail and the store to be clean')
    // a replica holding it connects again (a restart, a healed partition): gossipsub tells of its subscription
    await r.blockstore.put(lostNode.cid, lostNode.bytes)
    r.net.join('writer')
    await waitFor(async () => (await stateOf(r.store)).includes('/late=back'), 5000, 'the given-up branch to be retried')
    expect(await r.store.givenUpBranches()).to.have.lengthOf(0)
    await waitFor(async () => !(await r.store.isDirty()), 5000, 'the store to be clean again')
  })

  it('#20.8: a branch given up because nobody answered (no peer said it lacks the block) is tried again every few repair ticks', async () => {
    // the periodic retry of everything would come after 24 ticks of 150 ms (3.6 s); no announcer, no join
    const r = await replica({ dagSyncerTimeout: 100, maxFetchAttempts: 1, repairInterval: 150 })
    const lostNode = await encodeNode({ elements: [{ key: '/slow', id: '', value: enc('answered') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await storedNode(r.blockstore, '/top', 't', [lostNode.cid], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the branch to be given up')
    expect((await r.store.givenUpBranches())[0].refusedBy).to.equal(undefined)
    await r.blockstore.put(lostNode.cid, lostNode.bytes)
    await waitFor(async () => (await stateOf(r.store)).includes('/slow=answered'), 2500, 'the branch to be retried within a few ticks')
  })

  it('#20.8: a branch given up as malformed is not revived', async () => {
    const r = await replica({ dagSyncerTimeout: 100, repairInterval: 20 })
    const junkBytes = new Uint8Array(100).fill(7)
    const junk = CID.createV1(0x70, await sha256.digest(junkBytes))
    await r.blockstore.put(junk, junkBytes)
    const top = await storedNode(r.blockstore, '/top', 't', [junk], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().givenUpBranches === 1, 5000, 'the malformed branch to be given up')
    r.net.deliver(announce([top]), 'writer')
    // well past GIVEN_UP_RETRY_EVERY ticks (480 ms) and the announcer's return: a revival would give it up again
    await new Promise(resolve => setTimeout(resolve, 1500))
    expect(r.store.stats().givenUpBranches).to.equal(1)
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
  })

  it('#20.8: an honest branch queued behind many missing siblings is not given up for them', async () => {
    const r = await replica({ numWorkers: 2, dagSyncerTimeout: 150, maxFetchAttempts: 3 })
    const missing = await Promise.all(Array.from({ length: 20 }, async (_, i) => missingCid(`sibling-${i}`)))
    // the honest child arrives late (its writer was out of reach), listed after the junk links
    const child = await encodeNode({ elements: [{ key: '/honest', id: '', value: enc('late') }], tombstones: [], priority: 1, dagName: '' }, [])
    const top = await storedNode(r.blockstore, '/top', 't', [...missing, child.cid], 2)
    await r.store.receive(announce([top]))
    await waitFor(() => r.store.stats().walks === 0 && r.store.stats().headsInFlight === 0, 10_000, 'the first walk to end')
    await r.blockstore.put(child.cid, child.bytes)
    for (let i = 0; i < 15 && !(await stateOf(r.store)).includes('/honest=late'); i++) await r.store.repair().catch(() => {})
    expect(await stateOf(r.store)).to.include('/honest=late')
    // the junk siblings still get their failed fetches counted, and are given up in time
    for (let i = 0; i < 40 && (await r.store.pendingBranches()).length > 0; i++) await r.store.repair().catch(() => {})
    expect(await r.store.pendingBranches()).to.have.lengthOf(0)
    expect(r.store.stats().givenUpBranches).to.equal(20)
  })

  it('#20.10: more than 1,024 heads are announced in broadcasts every replica accepts', async () => {
    const r = await replica({ rebroadcastInterval: 100 })
    const roots: CID[] = []
    for (let i = 0; i < 1100; i++) roots.push(await storedNode(r.blockstore, `/root/${i}`, `${i}`))
    await r.store.receive(announce(roots.slice(0, 600)))
    await r.store.receive(announce(roots.slice(600)))
    expect(r.store.heads()).to.have.lengthOf(1100)
    await waitFor(() => r.net.sent.length >= 2, 10_000, 'a rebroadcast')
    const announced = new Set<string>()
    for (const payload of r.net.sent.slice(0, 2)) {
      for (const cids of decodeBroadcast(payload).values()) for (const cid of cids) announced.add(cid.toString())
    }
    expect(announced.size).to.equal(1100)
    expect(splitBroadcast(roots.map(cid => ({ cid, dagName: '' })))).to.have.lengthOf(2)
  })
})

describe('hostile peers: the Helia DAG syncer', () => {
  it('#20.1: asks the peer that announced a head first', async () => {
    const peers = Array.from({ length: 8 }, (_, i) => `peer-${i}`)
    const asked: string[] = []
    const bytes = enc('block')
    const cid = CID.createV1(0x55, await sha256.digest(bytes))
    const fake = {
      libp2p: {
        getConnections: () => peers.map(id => ({ remoteAddr: {} as any, remotePeer: { toString: () => id, toCID: () => id as any } }))
      },
      blockstore: {
        has: async () => false,
        put: async () => {},
        get: async function * () {},
        createSession: (_root: CID, options: any) => ({
          async * get () {
            const id = String(options.providers[0])
            asked.push(id)
            if (id !== 'peer-5') throw new Error('DONT_HAVE')
            yield bytes
          }
        })
      }
    }
    const { heliaDAGSyncer } = await import('../src/helia/dag-syncer.js')
    const syncer = heliaDAGSyncer(fake as any)
    const chunks: Uint8Array[] = []
    for await (const chunk of syncer.get(cid, { signal: AbortSignal.timeout(5000), preferPeer: 'peer-5' } as any)) chunks.push(chunk)
    expect(chunks).to.have.lengthOf(1)
    expect(asked).to.deep.equal(['peer-5'])
  })
})

describe('hostile peers: over libp2p on 127.0.0.1', function () {
  this.timeout(60_000)
  let nodes: ReplicaNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.map(async n => n.stop()))
    nodes = []
  })

  it('#20.7: junk blocks a peer serves under dag-pb CIDs do not stay in our blockstore', async () => {
    const evil = await createReplicaNode({ listen: ['/memory/hostile-disk-evil'] })
    const honest = await createReplicaNode({ listen: ['/memory/hostile-disk-honest'] })
    nodes.push(evil, honest)
    const store = await createHeliaCRDT(honest, { topic: 'hostile-disk', repairInterval: 0, dagSyncerTimeout: 5000 })
    try {
      await honest.libp2p.dial(evil.libp2p.getMultiaddrs()[0])
      const junk: CID[] = []
      for (let i = 0; i < 5; i++) {
        const bytes = new Uint8Array(200 * 1024).map((_, j) => (j * 31 + i * 7) & 0xff)
        const cid = CID.createV1(0x70, await sha256.digest(bytes))
        await evil.blockstore.put(cid, bytes)
        junk.push(cid)
      }
      await store.receive(announce(junk))
      for (const cid of junk) expect(await honest.blockstore.has(cid), cid.toString()).to.equal(false)
      expect(await stateOf(store)).to.deep.equal([])
    } finally {
      await store.stop()
    }
  })

  for (const sessions of [true, false]) {
    it(`#20.7: a 1 MiB junk block a peer serves under a CID we asked for never reaches the disk (sessions: ${sessions})`, async () => {
      const dir = await tempDir('hostile-disk')
      const evil = await createReplicaNode({ listen: [`/memory/hostile-disk2-evil-${sessions}`] })
      const honest = await createReplicaNode({ listen: [`/memory/hostile-disk2-honest-${sessions}`], directory: dir.path })
      nodes.push(evil, honest)
      const store = await createHeliaCRDT(honest, { sessions, topic: 'hostile-disk2', repairInterval: 0, dagSyncerTimeout: 5000, maxBlockSize: 256 * 1024, syncProtocol: false })
      try {
        await honest.libp2p.dial(evil.libp2p.getMultiaddrs()[0])
        // not a node, under the size limit of the store's default but over this one
        const junkBytes = new Uint8Array(1024 * 1024).map((_, j) => (j * 131 + 17) & 0xff)
        const junk = CID.createV1(0x70, await sha256.digest(junkBytes))
        await evil.blockstore.put(junk, junkBytes)
        // not a node, small
        const smallBytes = new Uint8Array(3000).fill(0x42)
        const small = CID.createV1(0x70, await sha256.digest(smallBytes))
        await evil.blockstore.put(small, smallBytes)
        // a real node over the limit, and a real node within it
        const big = await storedNode(evil.blockstore, '/big', 'x'.repeat(300 * 1024))
        const good = await storedNode(evil.blockstore, '/good', 'ok')
        const before = await dirSize(join(dir.path, 'blocks'))
        await store.receive(announce([junk, small, big, good]))
        const settled = async (): Promise<boolean> => {
          const st = store.stats()
          return st.queuedHeads === 0 && st.headsInFlight === 0 && st.queuedJobs === 0 && (await stateOf(store)).length === 1
        }
        await waitFor(settled, 30_000, 'every announced head to be handled')
        expect(await stateOf(store)).to.deep.equal(['/good=ok'])
        for (const cid of [junk, small, big]) expect(await honest.blockstore.has(cid), cid.toString()).to.equal(false)
        expect(await honest.blockstore.has(good)).to.equal(true)
        // LevelDB appends every put to its log: a block stored and deleted again would still show
        const grown = await dirSize(join(dir.path, 'blocks')) - before
        expect(grown).to.be.below(64 * 1024)
      } finally {
        await store.stop()
        nodes = nodes.filter(n => n !== honest)
        await honest.stop()
        await dir.remove()
      }
    })
  }

  it('#20.8: a repair asks the connected peers once for links nobody has, instead of waiting out dagSyncerTimeout', async () => {
    const other = await createReplicaNode({ listen: ['/memory/hostile-probe-other'] })
    const honest = await createReplicaNode({ listen: ['/memory/hostile-probe-honest'] })
    nodes.push(other, honest)
    await honest.libp2p.dial(other.libp2p.getMultiaddrs()[0])
    const missing = await Promise.all(Array.from({ length: 3 }, async (_, i) => missingCid(`probe-${i}`)))
    // `ok` allows top's claim: top is merged once it arrives, and the missing links become branches of their own
    const ok = await storedNode(other.blockstore, '/ok', 'o')
    const top = await storedNode(other.blockstore, '/top', 't', [ok, ...missing], 2)
    const first = await createHeliaCRDT(honest, { topic: 'hostile-probe', repairInterval: 0, syncProtocol: false })
    try {
      void first.receive(announce([top])).catch(() => {})
      await waitFor(async () => (await stateOf(first)).includes('/top=t') && (await first.pendingBranches()).length === 3, 10_000, 'the links to be pending')
    } finally {
      await first.stop()
    }
    // no deadline at all: only asking each connected peer once ends these fetches
    const store = await createHeliaCRDT(honest, { topic: 'hostile-probe', repairInterval: 0, dagSyncerTimeout: 0, maxFetchAttempts: 2, syncProtocol: false })
    try {
      for (let i = 0; i < 4 && (await store.pendingBranches()).length > 0; i++) await store.repair().catch(() => {})
      expect(await store.pendingBranches()).to.have.lengthOf(0)
      expect((await store.givenUpBranches()).map(b => b.cid.toString()).sort()).to.deep.equal(missing.map(String).sort())
    } finally {
      await store.stop()
    }
  })

  it('#20.8: fetches that had no peer to ask (a replica cut off) never give a branch up; once connected, links nobody has are', async () => {
    const other = await createReplicaNode({ listen: ['/memory/hostile-alone-other'] })
    const alone = await createReplicaNode({ listen: ['/memory/hostile-alone-honest'] })
    nodes.push(other, alone)
    const held = await storedNode(other.blockstore, '/held', 'h')
    const missing = await Promise.all(Array.from({ length: 2 }, async (_, i) => missingCid(`alone-${i}`)))
    const top = await storedNode(alone.blockstore, '/top', 't', [held, ...missing], 2)
    // one failed fetch that asked someone gives a branch up
    const store = await createHeliaCRDT(alone, { topic: 'hostile-alone', repairInterval: 0, dagSyncerTimeout: 3000, maxFetchAttempts: 1, syncProtocol: false })
    try {
      await store.receive(announce([top]))
      for (let i = 0; i < 3; i++) await store.repair().catch(() => {})
      // connected to nobody: the walk's fetches and the repairs' probes asked no one; top waits for a link that decides its priority
      expect(await stateOf(store)).to.not.include('/top=t')
      expect(await store.pendingBranches()).to.not.have.lengthOf(0)
      expect(await store.givenUpBranches()).to.have.lengthOf(0)
      await alone.libp2p.dial(other.libp2p.getMultiaddrs()[0])
      for (let i = 0; i < 4 && (await store.pendingBranches()).length > 0; i++) await store.repair().catch(() => {})
      // the repairs after connecting merged held, then top
      expect(await stateOf(store)).to.include('/held=h')
      expect(await stateOf(store)).to.include('/top=t')
      expect(await store.pendingBranches()).to.have.lengthOf(0)
      expect((await store.givenUpBranches()).map(b => b.cid.toString()).sort()).to.deep.equal(missing.map(String).sort())
      // recorded with the peer that said no: its rejoining alone does not revive them, a newcomer's does
      for (const b of await store.givenUpBranches()) expect(b.refusedBy).to.deep.equal([other.libp2p.peerId.toString()])
    } finally {
      await store.stop()
    }
  })

  it('#20.8: the pubsub broadcaster tells of every replica that joins the topic, again after it reconnects', async () => {
    const a = await createReplicaNode({ listen: ['/memory/hostile-join-a'] })
    const b = await createReplicaNode({ listen: ['/memory/hostile-join-b'] })
    nodes.push(a, b)
    const watched = pubsubBroadcaster({ pubsub: a.libp2p.services.pubsub }, { topic: 'hostile-join' })
    const other = pubsubBroadcaster({ pubsub: b.libp2p.services.pubsub }, { topic: 'hostile-join' })
    const joins: string[] = []
    const unwatch = watched.watchJoins?.(peer => { joins.push(peer) })
    try {
      await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
      await waitFor(() => joins.length === 1, 10_000, 'the first join')
      expect(joins).to.deep.equal([b.libp2p.peerId.toString()])
      await a.libp2p.hangUp(b.libp2p.peerId)
      await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
      await waitFor(() => joins.length === 2, 10_000, 'the join after the reconnect')
      unwatch?.()
      await a.libp2p.hangUp(b.libp2p.peerId)
      await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
      await new Promise(resolve => setTimeout(resolve, 500))
      expect(joins).to.have.lengthOf(2)
    } finally {
      await watched.stop()
      await other.stop()
    }
  })

  it('#20.9: idle raw sockets from 127.0.0.1 are not all held open', async () => {
    const node = await createReplicaNode()
    nodes.push(node)
    const port = Number(node.libp2p.getMultiaddrs()[0].toString().split('/')[4])
    const sockets = Array.from({ length: 100 }, () => connect(port, '127.0.0.1'))
    let closed = 0
    for (const s of sockets) {
      s.on('error', () => {})
      s.on('close', () => { closed++ })
    }
    try {
      // well before libp2p's 10 s upgrade timeout closes every idle socket anyway
      await waitFor(() => closed >= 100 - 32, 5000, 'excess sockets to be closed').catch(() => {})
      expect(100 - closed).to.be.at.most(32)
    } finally {
      for (const s of sockets) s.destroy()
    }
  })
})
