/**
 * The state a store keeps in its datastore, seen by a store reopened on the
 * same memory stores: heads of every DAG with their heights (and the order
 * they are listed and linked in), and the named errors a store gives when
 * that state is corrupt. persistence.spec.ts does the same on LevelDB
 * across processes; this file stays in memory so it is fast enough for the
 * mutation runs.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import * as varint from 'uint8-varint'
import { compare } from 'uint8arrays/compare'
import { blockKey } from '../src/codec/block-key.js'
import { createCRDTDatastore, decodeNode, encodeBroadcast, encodeNode } from '../src/index.js'
import { dec, enc, readBlock } from './fixtures/stores.js'
import type { CRDTDatastore } from '../src/index.js'
import type { CID } from 'multiformats/cid'

const k = new Key('/k')

describe('state kept in the datastore', () => {
  let datastore: MemoryDatastore
  let blockstore: MemoryBlockstore
  let open: CRDTDatastore[] = []

  async function start (): Promise<CRDTDatastore> {
    const store = await createCRDTDatastore({ datastore, blockstore }, { repairInterval: 0 })
    open.push(store)
    return store
  }

  async function rejection (p: Promise<unknown>): Promise<Error> {
    try {
      await p
    } catch (err: any) {
      return err
    }
    throw new Error('expected a rejection')
  }

  beforeEach(() => {
    datastore = new MemoryDatastore()
    blockstore = new MemoryBlockstore()
  })

  afterEach(async () => {
    await Promise.all(open.map(async s => s.stop().catch(() => {})))
    open = []
  })

  /** Three concurrent single-put nodes at height 1, stored in the blockstore */
  async function concurrentHeads (): Promise<CID[]> {
    const out: CID[] = []
    for (const v of ['one', 'two', 'three']) {
      const node = await encodeNode({ elements: [{ key: '/c', id: '', value: enc(v) }], tombstones: [], priority: 1, dagName: '' }, [])
      await blockstore.put(node.cid, node.bytes)
      out.push(node.cid)
    }
    return out
  }

  it('a reopened store has the heads of every DAG with their heights, and builds on them', async () => {
    const first = await start()
    await first.put(k, enc('v1'))
    await first.put(k, enc('v2'))
    await first.put(new Key('/n'), enc('n1'), { dagName: 'b/x' })
    await first.put(new Key('/m'), enc('m1'), { dagName: 'a' })
    await first.put(new Key('/m'), enc('m2'), { dagName: 'a' })
    await first.put(new Key('/m'), enc('m3'), { dagName: 'a' })
    const heads = first.heads().map(h => `${h.dagName}:${h.cid}@${h.height}`)
    await first.stop()

    const second = await start()
    expect(second.heads().map(h => `${h.dagName}:${h.cid}@${h.height}`)).to.deep.equal(heads)
    // listed by DAG name: the default DAG, then "a", then "b/x"
    expect(second.heads().map(h => [h.dagName, h.height])).to.deep.equal([['', 2], ['a', 3], ['b/x', 1]])
    expect(second.heads('a').map(h => h.height)).to.deep.equal([3])
    expect(second.stats().maxHeight).to.equal(3)
    expect(dec(await second.get(new Key('/m')))).to.equal('m3')

    await second.put(new Key('/m'), enc('m4'), { dagName: 'a' })
    expect(second.heads('a').map(h => h.height)).to.deep.equal([4])
    await second.put(new Key('/n'), enc('n2'), { dagName: 'b/x' })
    expect(second.heads('b/x').map(h => h.height)).to.deep.equal([2])
    await second.put(k, enc('v3'))
    expect(second.heads('').map(h => h.height)).to.deep.equal([3])
  })

  it('heads of one DAG are listed in CID byte order, and a new node links them in that order', async () => {
    const cids = await concurrentHeads()
    const store = await start()
    // announced in an order that is not the byte order
    const sorted = [...cids].sort((a, b) => compare(a.bytes, b.bytes))
    for (const cid of [sorted[2], sorted[0], sorted[1]]) await store.receive(encodeBroadcast([{ cid, dagName: '' }]))
    expect(store.heads().map(h => h.cid.toString())).to.deep.equal(sorted.map(String))
    await store.stop()

    const reopened = await start()
    expect(reopened.heads().map(h => h.cid.toString())).to.deep.equal(sorted.map(String))
    await reopened.put(k, enc('top'))
    const [top] = reopened.heads()
    expect(top.height).to.equal(2)
    const node = decodeNode(top.cid, await readBlock(blockstore, top.cid))
    expect(node.links.map(String)).to.deep.equal(sorted.map(String))
  })

  it('a remote element at priority 0 merges and can be overwritten', async () => {
    const node = await encodeNode({ elements: [{ key: '/z', id: '', value: enc('zero') }], tombstones: [], priority: 0, dagName: '' }, [])
    await blockstore.put(node.cid, node.bytes)
    const store = await start()
    await store.receive(encodeBroadcast([{ cid: node.cid, dagName: '' }]))
    expect(dec(await store.get(new Key('/z')))).to.equal('zero')
    await store.put(new Key('/z'), enc('one'))
    expect(dec(await store.get(new Key('/z')))).to.equal('one')
    await store.delete(new Key('/z'))
    expect(await store.has(new Key('/z'))).to.equal(false)
  })

  describe('corrupt state gives CorruptStateError', () => {
    it('a stored priority that does not decode, or decodes to nothing', async () => {
      const store = await start()
      await store.put(k, enc('v1'))
      for (const bad of [Uint8Array.of(0x80), varint.encode(0)]) {
        await datastore.put(new Key('/crdt/s/k/k/p'), bad)
        const err = await rejection(store.put(k, enc('v2')))
        expect(err.name).to.equal('CorruptStateError')
        expect(err.message).to.match(/Stored priority does not decode: /)
      }
    })

    it('a stored element marker that does not decode', async () => {
      const store = await start()
      await store.put(k, enc('kept'))
      const [head] = store.heads()
      await store.put(k, enc('purged'), { dagName: 'x' })
      await datastore.put(new Key(`/crdt/s/s/k${blockKey(head.cid)}`), Uint8Array.of(0xff))
      // purging "x" looks for the next-best element of /k: the corrupt one
      const err = await rejection(store.purgeDAG('x'))
      expect(err.name).to.equal('CorruptStateError')
      expect(err.message).to.match(/Stored element does not decode: /)
    })

    it('a head whose height does not decode stops the store from starting', async () => {
      const first = await start()
      await first.put(k, enc('v1'))
      const [head] = first.heads()
      await first.stop()
      for (const key of [`/crdt/h${blockKey(head.cid)}`, `/crdt/a/app${blockKey(head.cid)}`]) {
        await datastore.put(new Key(key), Uint8Array.of(0xff))
        const err = await rejection(start())
        expect(err.name).to.equal('CorruptStateError')
        expect(err.message).to.match(/^Head \/crdt\/.* does not decode: /)
        await datastore.delete(new Key(key))
      }
    })
  })

  it('reading an absent key throws NotFoundError naming the key; other datastore errors pass through', async () => {
    const store = await start()
    const err = await rejection(store.get(new Key('/absent')))
    expect(err.name).to.equal('NotFoundError')
    expect(err.message).to.equal('Key not found: /absent')
    const get = datastore.get.bind(datastore)
    datastore.get = async (key, options) => {
      if (key.toString().startsWith('/crdt/s/k/broken')) throw new Error('disk on fire')
      return get(key, options)
    }
    const broken = await rejection(store.get(new Key('/broken')))
    expect(broken.message).to.equal('disk on fire')
  })
})
