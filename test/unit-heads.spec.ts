/**
 * Unit spec of the heads (src/crdt/heads.ts) over a memory datastore: where
 * heads are stored (`h/` for the default DAG, `a/<name>/` for named DAGs,
 * value uvarint(height)), that changes reach the cache only when their
 * WriteSet commits, the deterministic order of `list()` and `all()`, the
 * greatest height, and what `load()` does with what it finds on disk.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as varint from 'uint8-varint'
import { compare as compareBytes } from 'uint8arrays/compare'
import { blockKey } from '../src/codec/block-key.js'
import { Heads } from '../src/crdt/heads.js'
import { Layout } from '../src/crdt/layout.js'
import { WriteSet } from '../src/crdt/write-set.js'

async function cidOf (s: string): Promise<CID> {
  return CID.createV1(0x70, await sha256.digest(new TextEncoder().encode(s)))
}

describe('Heads', () => {
  let ds: MemoryDatastore
  let layout: Layout
  let heads: Heads
  let cids: CID[]

  beforeEach(async () => {
    ds = new MemoryDatastore()
    layout = new Layout('/ns')
    heads = new Heads(ds, layout)
    cids = await Promise.all(['a', 'b', 'c', 'd', 'e'].map(cidOf))
  })

  async function add (dagName: string, cid: CID, height: number): Promise<void> {
    const tx = new WriteSet(ds)
    heads.add(tx, { cid, height, dagName })
    await tx.commit()
  }

  it('starts empty', async () => {
    await heads.load()
    expect(heads.all()).to.deep.equal([])
    expect(heads.list('')).to.deep.equal([])
    expect(heads.dagNames()).to.deep.equal([])
    expect(heads.count('')).to.equal(0)
    expect(heads.maxHeight()).to.equal(0)
    expect(heads.maxHeight('')).to.equal(0)
    expect(heads.get('', cids[0])).to.be.undefined()
  })

  it('stores a default-DAG head under h/ and a named-DAG head under a/<name>/, value uvarint(height)', async () => {
    await add('', cids[0], 3)
    await add('docs', cids[1], 300)
    const def = await ds.get(new Key(`/ns/h${blockKey(cids[0])}`))
    expect(varint.decode(def)).to.equal(3)
    const named = await ds.get(new Key(`/ns/a/docs${blockKey(cids[1])}`))
    expect(varint.decode(named)).to.equal(300)
  })

  it('an added head is visible only once its WriteSet commits', async () => {
    const tx = new WriteSet(ds)
    heads.add(tx, { cid: cids[0], height: 1, dagName: '' })
    expect(heads.count('')).to.equal(0)
    expect(heads.get('', cids[0])).to.be.undefined()
    await tx.commit()
    expect(heads.count('')).to.equal(1)
    expect(heads.get('', cids[0])).to.deep.include({ height: 1, dagName: '' })
    expect(heads.get('', cids[0])?.cid.equals(cids[0])).to.be.true()
    // another DAG does not see it
    expect(heads.get('docs', cids[0])).to.be.undefined()
    expect(heads.count('docs')).to.equal(0)
  })

  it('a removed head goes from disk and, once committed, from the cache; an emptied DAG is no longer named', async () => {
    await add('', cids[0], 1)
    await add('docs', cids[1], 2)
    await add('docs', cids[2], 2)
    expect(heads.dagNames().sort()).to.deep.equal(['', 'docs'])

    let tx = new WriteSet(ds)
    heads.remove(tx, 'docs', cids[1])
    expect(heads.count('docs')).to.equal(2)
    await tx.commit()
    expect(heads.count('docs')).to.equal(1)
    expect(heads.get('docs', cids[1])).to.be.undefined()
    expect(await ds.has(new Key(`/ns/a/docs${blockKey(cids[1])}`))).to.be.false()
    expect(heads.dagNames().sort()).to.deep.equal(['', 'docs'])

    tx = new WriteSet(ds)
    heads.remove(tx, 'docs', cids[2])
    await tx.commit()
    expect(heads.count('docs')).to.equal(0)
    expect(heads.dagNames()).to.deep.equal([''])
    expect(heads.all().map(h => h.cid.toString())).to.deep.equal([cids[0].toString()])

    // removing from a DAG that has no heads is harmless
    tx = new WriteSet(ds)
    heads.remove(tx, 'none', cids[3])
    await tx.commit()
    expect(heads.dagNames()).to.deep.equal([''])
  })

  it('adding a head twice keeps one entry with the later height', async () => {
    await add('', cids[0], 1)
    await add('', cids[0], 5)
    expect(heads.count('')).to.equal(1)
    expect(heads.maxHeight('')).to.equal(5)
  })

  it('lists a DAG by CID bytes and all DAGs by name, then CID bytes', async () => {
    for (const [i, cid] of cids.entries()) await add(i % 2 === 0 ? 'b-dag' : '', cid, i + 1)
    await add('a-dag', cids[4], 9)
    const byBytes = (list: CID[]): string[] => [...list].sort((x, y) => compareBytes(x.bytes, y.bytes)).map(String)
    const even = [cids[0], cids[2], cids[4]]
    const odd = [cids[1], cids[3]]
    expect(heads.list('b-dag').map(h => h.cid.toString())).to.deep.equal(byBytes(even))
    expect(heads.list('').map(h => h.cid.toString())).to.deep.equal(byBytes(odd))
    expect(heads.all().map(h => `${h.dagName}:${h.cid.toString()}`)).to.deep.equal([
      ...byBytes(odd).map(c => `:${c}`),
      `a-dag:${cids[4].toString()}`,
      ...byBytes(even).map(c => `b-dag:${c}`)
    ])
    // the order does not depend on insertion order: the byte order is not the insertion order here
    expect(byBytes(even)).to.not.deep.equal(even.map(String))
  })

  it('maxHeight is the greatest height of a DAG, or of every DAG when none is named', async () => {
    await add('', cids[0], 4)
    await add('', cids[1], 7)
    await add('', cids[2], 2)
    await add('docs', cids[3], 11)
    expect(heads.maxHeight('')).to.equal(7)
    expect(heads.maxHeight('docs')).to.equal(11)
    expect(heads.maxHeight()).to.equal(11)
    expect(heads.maxHeight('other')).to.equal(0)
  })

  it('load() reads back every head of every DAG, names with escaped characters too', async () => {
    await add('', cids[0], 1)
    await add('', cids[1], 2)
    await add('docs', cids[2], 3)
    await add('naïve ✓', cids[3], 4)
    const reloaded = new Heads(ds, layout)
    await reloaded.load()
    const show = (h: Heads): string[] => h.all().map(x => `${x.dagName}:${x.cid.toString()}:${x.height}`)
    expect(show(reloaded)).to.deep.equal(show(heads))
    expect(reloaded.dagNames().sort()).to.deep.equal(['', 'docs', 'naïve ✓'])
    expect(reloaded.get('naïve ✓', cids[3])?.height).to.equal(4)
    expect(reloaded.count('')).to.equal(2)
  })

  it('load() forgets what the cache held before', async () => {
    await add('', cids[0], 1)
    await add('docs', cids[1], 1)
    await ds.delete(new Key(`/ns/h${blockKey(cids[0])}`))
    await ds.delete(new Key(`/ns/a/docs${blockKey(cids[1])}`))
    await heads.load()
    expect(heads.all()).to.deep.equal([])
  })

  it('load() reads only its own namespace and ignores keys beside the heads prefixes', async () => {
    await add('', cids[0], 1)
    const other = new Heads(ds, new Layout('/other'))
    const tx = new WriteSet(ds)
    other.add(tx, { cid: cids[1], height: 2, dagName: '' })
    other.add(tx, { cid: cids[2], height: 2, dagName: 'docs' })
    await tx.commit()
    // keys that start like the prefixes but are not under them
    await ds.put(new Key('/ns/hx'), Uint8Array.of(0xff))
    await ds.put(new Key('/ns/ax'), Uint8Array.of(0xff))
    const reloaded = new Heads(ds, layout)
    await reloaded.load()
    expect(reloaded.all().map(h => h.cid.toString())).to.deep.equal([cids[0].toString()])
  })

  it('load() fails with CorruptStateError on a head that does not decode', async () => {
    await ds.put(new Key('/ns/h/NOT-A-BLOCK-KEY'), varint.encode(1))
    await expect(new Heads(ds, layout).load()).to.eventually.be.rejected.with.property('name', 'CorruptStateError')
    const bad = new MemoryDatastore()
    await bad.put(new Key(`/ns/a/docs${blockKey(cids[0])}`), new Uint8Array(0))
    const err = await new Heads(bad, layout).load().then(() => undefined, (e: Error) => e)
    expect(err).to.have.property('name', 'CorruptStateError')
    expect(err?.message).to.include(`/ns/a/docs${blockKey(cids[0])}`)
  })
})
