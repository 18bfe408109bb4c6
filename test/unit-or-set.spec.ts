/**
 * Unit spec of the OR-set (src/crdt/or-set.ts) over a memory datastore,
 * deltas merged by hand: the merge rule (highest priority, then byte-wise
 * greatest value; a key put twice in one node counts once with its greatest
 * value), tombstones (revealing the next-best live element, deleting the key
 * when none is left, ignoring empty ids, hiding a re-delivered element),
 * `tombstonesFor`, `purge`, the changes each reports, and the reads
 * (`get`, `has`, `entries`, `keys`) over escaped and nested keys.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import all from 'it-all'
import { Layout } from '../src/crdt/layout.js'
import { ORSet, decodeMarker, decodePriority, encodePriority } from '../src/crdt/or-set.js'
import { WriteSet } from '../src/crdt/write-set.js'
import type { Delta } from '../src/codec/delta.js'
import type { SetChange } from '../src/crdt/or-set.js'
import type { Query } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array): string => new TextDecoder().decode(b)
const EMPTY = new Uint8Array(0)

/** Block-key-like ids: distinct, ascending */
const ID = ['/AAAA', '/BBBB', '/CCCC', '/DDDD', '/EEEE', '/FFFF']

class QueryCountingDatastore extends MemoryDatastore {
  queries = 0
  override query (q: Query, options?: AbortOptions): ReturnType<MemoryDatastore['query']> {
    this.queries++
    return super.query(q, options)
  }
}

function delta (priority: number, puts: Array<[string, string]>, tombs: Array<[string, string]> = []): Delta {
  return {
    priority,
    dagName: '',
    elements: puts.map(([key, value]) => ({ key, id: '', value: enc(value) })),
    tombstones: tombs.map(([key, id]) => ({ key, id, value: EMPTY }))
  }
}

function show (changes: SetChange[]): string[] {
  return changes.map(c => c.value == null ? `${c.key} deleted` : `${c.key}=${dec(c.value)}`).sort()
}

describe('ORSet', () => {
  let ds: QueryCountingDatastore
  let layout: Layout
  let set: ORSet

  beforeEach(() => {
    ds = new QueryCountingDatastore()
    layout = new Layout('/ns')
    set = new ORSet(ds, layout)
  })

  async function merge (d: Delta, id: string, fresh = false): Promise<string[]> {
    const tx = new WriteSet(ds)
    const changes = await set.merge(tx, d, id, fresh)
    await tx.commit()
    return show(changes)
  }

  async function value (key: string): Promise<string | undefined> {
    return await set.has(key) ? dec(await set.get(key)) : undefined
  }

  async function priority (key: string): Promise<number | undefined> {
    const k = layout.priorityKey(key)
    return await ds.has(k) ? decodePriority(await ds.get(k)) : undefined
  }

  describe('merge rule', () => {
    it('the first element of a key becomes visible with its priority', async () => {
      expect(await merge(delta(3, [['/a', 'x']]), ID[0])).to.deep.equal(['/a=x'])
      expect(await value('/a')).to.equal('x')
      expect(await priority('/a')).to.equal(3)
    })

    it('a higher priority wins whatever the bytes; a lower one loses whatever the bytes', async () => {
      await merge(delta(2, [['/a', 'm']]), ID[0])
      expect(await merge(delta(3, [['/a', 'a']]), ID[1])).to.deep.equal(['/a=a'])
      expect(await value('/a')).to.equal('a')
      expect(await priority('/a')).to.equal(3)
      expect(await merge(delta(1, [['/a', 'zzz']]), ID[2])).to.deep.equal([])
      expect(await value('/a')).to.equal('a')
      expect(await priority('/a')).to.equal(3)
    })

    it('equal priorities go to the byte-wise greatest value; an equal value changes nothing', async () => {
      await merge(delta(5, [['/a', 'b']]), ID[0])
      expect(await merge(delta(5, [['/a', 'a']]), ID[1])).to.deep.equal([])
      expect(await value('/a')).to.equal('b')
      expect(await merge(delta(5, [['/a', 'b']]), ID[2])).to.deep.equal([])
      expect(await merge(delta(5, [['/a', 'ba']]), ID[3])).to.deep.equal(['/a=ba'])
      expect(await value('/a')).to.equal('ba')
      // byte order, not string order: 0xC3 (start of é) beats 'z'
      expect(await merge(delta(5, [['/a', 'é']]), ID[4])).to.deep.equal(['/a=é'])
    })

    it('priority 0 counts as a priority: a later equal-priority greater value wins', async () => {
      await merge(delta(0, [['/a', 'a']]), ID[0])
      expect(await priority('/a')).to.equal(0)
      expect(await merge(delta(0, [['/a', 'b']]), ID[1])).to.deep.equal(['/a=b'])
      expect(await merge(delta(0, [['/a', 'a']]), ID[2])).to.deep.equal([])
    })

    it('an empty value is a value: it loses a tie to any non-empty value and beats nothing', async () => {
      await merge(delta(1, [['/a', '']]), ID[0])
      expect(await value('/a')).to.equal('')
      expect(await merge(delta(1, [['/a', '']]), ID[1])).to.deep.equal([])
      expect(await merge(delta(1, [['/a', 'x']]), ID[2])).to.deep.equal(['/a=x'])
    })

    it('the result does not depend on the order deltas arrive in', async () => {
      const deltas: Array<[Delta, string]> = [
        [delta(2, [['/a', 'q'], ['/b', 'b2']]), ID[0]],
        [delta(4, [['/a', 'c']]), ID[1]],
        [delta(4, [['/a', 'd'], ['/b', 'a']]), ID[2]],
        [delta(1, [['/b', 'zz']]), ID[3]]
      ]
      const results: string[][] = []
      for (const order of [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]) {
        ds = new QueryCountingDatastore()
        set = new ORSet(ds, layout)
        for (const i of order) await merge(deltas[i][0], deltas[i][1])
        results.push([`${await value('/a')}@${await priority('/a')}`, `${await value('/b')}@${await priority('/b')}`])
      }
      expect(results).to.deep.equal([['d@4', 'a@4'], ['d@4', 'a@4'], ['d@4', 'a@4']])
    })

    it('a key put several times in one node counts once, with its greatest value, in any order', async () => {
      expect(await merge(delta(1, [['/a', 'b'], ['/a', 'c'], ['/a', 'a']]), ID[0])).to.deep.equal(['/a=c'])
      expect(await value('/a')).to.equal('c')
      expect(await set.elementIds('/a', new WriteSet(ds))).to.deep.equal([ID[0]])
      // deleting it removes the key: there is no second element of that node to reveal
      expect(await merge(delta(2, [], [['/a', ID[0]]]), ID[1])).to.deep.equal(['/a deleted'])
      expect(await value('/a')).to.be.undefined()
    })

    it('keys are cleaned as go-datastore cleans them', async () => {
      await merge(delta(1, [['a//b/', 'x']]), ID[0])
      expect(await value('/a/b')).to.equal('x')
      await merge(delta(2, [], [['/a/./b', ID[0]]]), ID[1])
      expect(await value('/a/b')).to.be.undefined()
    })

    it('stores each element with its priority and value', async () => {
      await merge(delta(7, [['/a', 'val']]), ID[0])
      const marker = decodeMarker(await ds.get(layout.elemKey('/a', ID[0])))
      expect(marker.priority).to.equal(7)
      expect(dec(marker.value)).to.equal('val')
      // a losing element is stored too: it is what a delete of the winner reveals
      await merge(delta(1, [['/a', 'low']]), ID[1])
      expect(dec(decodeMarker(await ds.get(layout.elemKey('/a', ID[1]))).value)).to.equal('low')
    })
  })

  describe('tombstones', () => {
    beforeEach(async () => {
      await merge(delta(1, [['/a', 'low']]), ID[0])
      await merge(delta(3, [['/a', 'mid-b']]), ID[1])
      await merge(delta(3, [['/a', 'mid-a']]), ID[2])
      await merge(delta(5, [['/a', 'top']]), ID[3])
    })

    it('tombstoning the visible element reveals the next best by priority, then bytes', async () => {
      expect(await merge(delta(6, [], [['/a', ID[3]]]), ID[4])).to.deep.equal(['/a=mid-b'])
      expect(await priority('/a')).to.equal(3)
      expect(await merge(delta(7, [], [['/a', ID[1]]]), ID[5])).to.deep.equal(['/a=mid-a'])
      expect(await merge(delta(8, [], [['/a', ID[2]]]), '/GGGG')).to.deep.equal(['/a=low'])
      expect(await priority('/a')).to.equal(1)
    })

    it('tombstoning every element deletes the value and its priority', async () => {
      expect(await merge(delta(6, [], ID.slice(0, 4).map(id => ['/a', id])), ID[4])).to.deep.equal(['/a deleted'])
      expect(await value('/a')).to.be.undefined()
      expect(await priority('/a')).to.be.undefined()
      expect(await ds.has(layout.valueKey('/a'))).to.be.false()
      // tombstoning again changes nothing
      expect(await merge(delta(7, [], [['/a', ID[3]]]), ID[5])).to.deep.equal([])
    })

    it('tombstoning a hidden element changes nothing visible', async () => {
      expect(await merge(delta(6, [], [['/a', ID[0]]]), ID[4])).to.deep.equal([])
      expect(await value('/a')).to.equal('top')
      // and it stays dead: deleting the rest leaves nothing
      expect(await merge(delta(7, [], [['/a', ID[1]], ['/a', ID[2]], ['/a', ID[3]]]), ID[5])).to.deep.equal(['/a deleted'])
    })

    it('a tombstone with an empty id is ignored', async () => {
      expect(await merge(delta(6, [], [['/a', '']]), ID[4])).to.deep.equal([])
      expect(await value('/a')).to.equal('top')
      expect(await set.tombstonesFor('/a', new WriteSet(ds))).to.have.length(4)
    })

    it('a tombstone that arrives before its element keeps the element hidden', async () => {
      expect(await merge(delta(9, [], [['/b', ID[4]]]), ID[5])).to.deep.equal([])
      expect(await merge(delta(1, [['/b', 'ghost']]), ID[4])).to.deep.equal([])
      expect(await value('/b')).to.be.undefined()
      // a fresh (local) element is not checked: nobody can have tombstoned it
      expect(await merge(delta(1, [['/c', 'mine']]), ID[4], true)).to.deep.equal(['/c=mine'])
    })

    it('a node that deletes and puts one key: its own put survives its tombstones', async () => {
      expect(await merge(delta(6, [['/a', 'new']], ID.slice(0, 4).map(id => ['/a', id])), ID[4])).to.deep.equal(['/a=new'])
      expect(await value('/a')).to.equal('new')
      expect(await priority('/a')).to.equal(6)
    })

    it('a tombstone reports a change only when the visible value changes; equal priority and value do not', async () => {
      // two elements with the same priority and value: deleting one leaves the value as it was
      await merge(delta(5, [['/a', 'top']]), ID[4])
      expect(await merge(delta(6, [], [['/a', ID[3]]]), ID[5])).to.deep.equal([])
      expect(await value('/a')).to.equal('top')
    })

    it('a tombstone revealing an element of the same value but lower priority rewrites the priority', async () => {
      await merge(delta(2, [['/a', 'top']]), ID[4])
      await merge(delta(6, [], [['/a', ID[1]], ['/a', ID[2]]]), ID[5])
      expect(await merge(delta(7, [], [['/a', ID[3]]]), '/GGGG')).to.deep.equal(['/a=top'])
      expect(await priority('/a')).to.equal(2)
    })

    it('tombstonesFor lists the live elements of a key in ascending id order', async () => {
      await merge(delta(6, [], [['/a', ID[1]]]), ID[4])
      await merge(delta(1, [['/a/b', 'nested']]), ID[5])
      const tombs = await set.tombstonesFor('/a', new WriteSet(ds))
      expect(tombs.map(t => t.id)).to.deep.equal([ID[0], ID[2], ID[3]])
      expect(tombs.every(t => t.key === '/a' && t.value.byteLength === 0)).to.be.true()
      expect(await set.tombstonesFor('/none', new WriteSet(ds))).to.deep.equal([])
      // pending tombstones in the same WriteSet count
      const tx = new WriteSet(ds)
      await set.merge(tx, delta(7, [], [['/a', ID[0]]]), '/GGGG', false)
      expect((await set.tombstonesFor('/a', tx)).map(t => t.id)).to.deep.equal([ID[2], ID[3]])
    })
  })

  describe('purge', () => {
    it('removes the elements and tombstones of the given nodes and recomputes each key', async () => {
      await merge(delta(1, [['/a', 'kept'], ['/b', 'only']]), ID[0])
      await merge(delta(2, [['/a', 'purged']]), ID[1])
      // a tombstone whose element has not arrived yet
      await merge(delta(4, [], [['/c', ID[2]]]), ID[3])
      await merge(delta(1, [['/d', 'd']]), ID[4])
      const tx = new WriteSet(ds)
      const changes = await set.purge(tx, new Map([
        ['/a', new Set([ID[1]])],
        ['/b', new Set([ID[0]])],
        ['/c', new Set([ID[2]])],
        ['/d', new Set([ID[1]])]
      ]), {})
      await tx.commit()
      expect(show(changes)).to.deep.equal(['/a=kept', '/b deleted'])
      expect(await value('/a')).to.equal('kept')
      expect(await priority('/a')).to.equal(1)
      expect(await value('/b')).to.be.undefined()
      expect(await priority('/b')).to.be.undefined()
      expect(await value('/d')).to.equal('d')
      expect(await ds.has(layout.elemKey('/a', ID[1]))).to.be.false()
      expect(await ds.has(layout.tombKey('/c', ID[2]))).to.be.false()
      // the purged tombstone no longer hides its element
      expect(await merge(delta(3, [['/c', 'c']]), ID[2])).to.deep.equal(['/c=c'])
    })

    it('reports a key whose priority changes though its value does not', async () => {
      await merge(delta(1, [['/a', 'same']]), ID[0])
      await merge(delta(2, [['/a', 'same']]), ID[1])
      const tx = new WriteSet(ds)
      expect(show(await set.purge(tx, new Map([['/a', new Set([ID[1]])]])))).to.deep.equal(['/a=same'])
      await tx.commit()
      expect(await priority('/a')).to.equal(1)
      const tx2 = new WriteSet(ds)
      expect(await set.purge(tx2, new Map([['/none', new Set([ID[1]])]]))).to.deep.equal([])
    })

    it('a purge that leaves a key without a visible value but with live elements sets it', async () => {
      await merge(delta(1, [['/a', 'x']]), ID[0])
      // lose the materialised value (e.g. written by an older version), keep the element
      await ds.delete(layout.valueKey('/a'))
      await ds.delete(layout.priorityKey('/a'))
      const tx = new WriteSet(ds)
      expect(show(await set.purge(tx, new Map([['/a', new Set([ID[5]])]])))).to.deep.equal(['/a=x'])
      await tx.commit()
      expect(await value('/a')).to.equal('x')
    })
  })

  describe('reads', () => {
    beforeEach(async () => {
      await merge(delta(1, [['/', 'root'], ['/a', 'A'], ['/a/b', 'AB'], ['/ab', 'ab'], ['/ü', 'u'], ['/😀', 'smile'], ['/b', 'B']]), ID[0])
    })

    it('get throws NotFoundError for an absent key; has says false', async () => {
      await expect(set.get('/none')).to.eventually.be.rejected.with.property('name', 'NotFoundError')
      expect(await set.has('/none')).to.be.false()
      expect(dec(await set.get('/ü'))).to.equal('u')
    })

    it('get passes other datastore errors on', async () => {
      const failing = new ORSet(Object.assign(new MemoryDatastore(), {
        get: async () => { throw Object.assign(new Error('broken'), { name: 'IOError' }) }
      }), layout)
      await expect(failing.get('/a')).to.eventually.be.rejected.with.property('name', 'IOError')
    })

    it('entries and keys list visible keys only (no priorities), escaped keys as written', async () => {
      const everything = ['/', '/a', '/a/b', '/ab', '/b', '/ü', '/😀']
      for (const prefix of [undefined, '', '/']) {
        const entries = await all(set.entries(prefix))
        expect(entries.map(e => e.key.toString()).sort()).to.deep.equal(everything)
        expect(entries.find(e => e.key.toString() === '/a/b')?.value).to.satisfy((v: Uint8Array) => dec(v) === 'AB')
        const keys = await all(set.keys(prefix))
        expect(keys.map(k => k.toString()).sort()).to.deep.equal(everything)
      }
    })

    it('a prefix narrows entries and keys, escaped prefixes and a lone high surrogate too', async () => {
      expect((await all(set.keys('/a'))).map(String).sort()).to.deep.equal(['/a', '/a/b', '/ab'])
      // '/a/' also reaches '/a' itself (its stored key is '/a/v'): the caller's prefix filter drops it
      expect((await all(set.entries('/a/'))).map(e => e.key.toString()).sort()).to.deep.equal(['/a', '/a/b'])
      expect((await all(set.keys('/ü'))).map(String)).to.deep.equal(['/ü'])
      // the first half of 😀's surrogate pair: cut before it, the caller filters the rest
      const cut = (await all(set.keys('/\ud83d'))).map(String)
      expect(cut).to.include('/😀')
    })

    it('a key deleted later is no longer listed', async () => {
      await merge(delta(2, [], [['/a', ID[0]]]), ID[1])
      expect((await all(set.keys('/a'))).map(String).sort()).to.deep.equal(['/a/b', '/ab'])
    })
  })

  describe('stored priorities and markers', () => {
    it('encodes priority p as uvarint(p + 1) and rejects 0 and garbage as corrupt', () => {
      expect(encodePriority(0)).to.deep.equal(Uint8Array.of(1))
      expect(decodePriority(encodePriority(300))).to.equal(300)
      expect(() => decodePriority(Uint8Array.of(0))).to.throw().with.property('name', 'CorruptStateError')
      expect(() => decodePriority(Uint8Array.of(0x80))).to.throw().with.property('name', 'CorruptStateError')
      expect(() => decodeMarker(Uint8Array.of(0x80))).to.throw().with.property('name', 'CorruptStateError')
    })

    it('a corrupt stored priority fails the merge with CorruptStateError', async () => {
      await merge(delta(1, [['/a', 'x']]), ID[0])
      await ds.put(layout.priorityKey('/a'), Uint8Array.of(0))
      await expect(merge(delta(2, [['/a', 'y']]), ID[1])).to.eventually.be.rejected.with.property('name', 'CorruptStateError')
    })

    it('a priority stored without its value compares against the empty value', async () => {
      await merge(delta(1, [['/a', 'x']]), ID[0])
      await ds.delete(layout.valueKey('/a'))
      expect(await merge(delta(1, [['/a', 'a']]), ID[1])).to.deep.equal(['/a=a'])
    })
  })

  describe('prefetch scans', () => {
    const many = (n: number, from = 0): Array<[string, string]> => Array.from({ length: n }, (_, i) => [`/k/${String(i + from).padStart(4, '0')}`, 'v'])

    it('a delta of 16 keys or more reads priorities and tombstones with one scan each; fewer keys with none', async () => {
      await merge(delta(1, many(15)), ID[0])
      expect(ds.queries).to.equal(0)
      await merge(delta(1, many(16, 100)), ID[1])
      expect(ds.queries).to.equal(2)
      await merge(delta(1, many(16, 200)), ID[2], true)
      expect(ds.queries).to.equal(3)
    })

    it('after a scan cut short, the next 32 merges read key by key, then scans resume', async () => {
      // 40 keys stored densely under /k/ with many entries between them
      for (let i = 0; i < 200; i++) await ds.put(new Key(`${layout.keysPrefix}/k/0/${String(i).padStart(4, '0')}/p`), encodePriority(0))
      const dense = (i: number): Array<[string, string]> => Array.from({ length: 16 }, (_, j) => [`/k/${String(i).padStart(2, '0')}${String(j).padStart(2, '0')}`, 'v'])
      const wide: Array<[string, string]> = [...Array.from({ length: 15 }, (_, j) => [`/k/0/${String(j).padStart(4, '0')}`, 'w'] as [string, string]), ['/k/1', 'w']]
      ds.queries = 0
      await merge(delta(1, wide), ID[0], true)
      // the priority scan over /k/ met 200 entries, more than 16 * 2 + 64
      expect(ds.queries).to.equal(1)
      for (let i = 0; i < 32; i++) await merge(delta(1, dense(i + 10)), `/M${i}`, true)
      expect(ds.queries).to.equal(1)
      await merge(delta(1, dense(50)), '/MZ', true)
      expect(ds.queries).to.equal(2)
    })
  })

  describe('edges a mutation run found unchecked', () => {
    it('a tombstone with an empty id writes nothing at all', async () => {
      await merge(delta(1, [['/a', 'x']]), ID[0])
      const tx = new WriteSet(ds)
      expect(await set.merge(tx, delta(2, [], [['/a', '']]), ID[1], false)).to.deep.equal([])
      expect(tx.size).to.equal(0)
    })

    it('a key left without a live element is reported as { key } alone, with no value property', async () => {
      await merge(delta(1, [['/a', 'x']]), ID[0])
      const tx = new WriteSet(ds)
      const changes = await set.merge(tx, delta(2, [], [['/a', ID[0]]]), ID[1], false)
      expect(changes).to.deep.equal([{ key: '/a' }])
      expect('value' in changes[0]).to.be.false()
    })

    it('a stored priority of zero is reported as such', () => {
      expect(() => decodePriority(Uint8Array.of(0))).to.throw('Stored priority does not decode: zero')
    })

    it('a prefix ending in a surrogate is cut only before a lone high surrogate (U+D800 to U+DBFF)', async () => {
      // U+10000 is D800 DC00, U+10FC00 is DBFF DC00
      await merge(delta(1, [['/x😀', '1'], ['/x\u{10000}', '2'], ['/\u{10FC00}', '3'], ['/y', '4'], ['/\uE000', '5']]), ID[0])
      const keys = async (prefix: string): Promise<string[]> => (await all(set.keys(prefix))).map(String).sort()
      // a whole pair at the end is kept: only keys under it
      expect(await keys('/x😀')).to.deep.equal(['/x😀'])
      expect(await keys('/\uE000')).to.deep.equal(['/\uE000'])
      // a lone high surrogate is cut: what stays of the prefix still narrows
      expect(await keys('/x\ud83d')).to.deep.equal(['/x\u{10000}', '/x😀'].sort())
      expect(await keys('/x\ud800')).to.include('/x\u{10000}')
      expect(await keys('/\udbff')).to.include('/\u{10FC00}')
    })

    it('the tombstones of an element are read for existence only, never their values', async () => {
      class CountingGets extends MemoryDatastore {
        tombGets = 0
        override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
          if (key.toString().startsWith(layout.tombsPrefix)) this.tombGets++
          return super.get(key, options)
        }
      }
      const counting = new CountingGets()
      set = new ORSet(counting, layout)
      await counting.put(layout.tombKey('/b', ID[1]), EMPTY)
      const tx = new WriteSet(counting)
      const changes = await set.merge(tx, delta(1, [['/a', 'x'], ['/b', 'hidden'], ['/c', 'y']]), ID[1], false)
      expect(show(changes)).to.deep.equal(['/a=x', '/c=y'])
      expect(counting.tombGets).to.equal(0)
    })

    it('a dense run of stored keys (two entries each) is decided by one complete scan', async () => {
      // 45 stored keys: 90 entries under the prefix, within 45 * 2 + 64 but over 45 / 2 + 64
      const stored = Array.from({ length: 45 }, (_, i): [string, string] => [`/k/${String(i).padStart(2, '0')}`, 'old'])
      await merge(delta(1, stored), ID[0], true)
      ds.queries = 0
      await merge(delta(2, stored.map(([k]) => [k, 'new'])), ID[1], true)
      expect(ds.queries).to.equal(1)
      // complete: the next dense merge scans again (a scan cut short would make it read key by key)
      await merge(delta(3, Array.from({ length: 16 }, (_, i): [string, string] => [`/n/${String(i).padStart(2, '0')}`, 'v'])), ID[2], true)
      expect(ds.queries).to.equal(2)
      expect(await value('/k/44')).to.equal('new')
    })
  })

  describe('remove (a snapshot\'s removal of overwritten elements)', () => {
    async function remove (elements: Array<{ key: string, id: string }>): Promise<string[]> {
      const tx = new WriteSet(ds)
      const changes = await set.remove(tx, elements)
      await tx.commit()
      return show(changes)
    }

    it('moves a beaten element to the removed ones: its marker under s/r, the visible value unchanged, no change reported; an element not stored (or removed already) is skipped', async () => {
      await merge(delta(1, [['/a', 'old']]), ID[0])
      await merge(delta(2, [['/a', 'new']]), ID[1])
      const marker = await ds.get(layout.elemKey('/a', ID[0]))
      expect(await remove([{ key: '/a', id: ID[0] }, { key: '/a', id: ID[5] }])).to.deep.equal([])
      expect(await ds.has(layout.elemKey('/a', ID[0]))).to.equal(false)
      expect(await ds.get(layout.removedKey('/a', ID[0]))).to.deep.equal(marker)
      expect(await ds.has(layout.removedKey('/a', ID[5]))).to.equal(false)
      expect(await ds.has(layout.elemKey('/a', ID[1]))).to.equal(true)
      expect(await value('/a')).to.equal('new')
      expect(await priority('/a')).to.equal(2)
      // again: nothing stored under s/s for it any more, nothing changes
      expect(await remove([{ key: '/a', id: ID[0] }])).to.deep.equal([])
      expect(await ds.get(layout.removedKey('/a', ID[0]))).to.deep.equal(marker)
    })

    it('removing the visible element shows the key\'s next best (reported once per key), and removing a key\'s last element deletes it', async () => {
      await merge(delta(1, [['/a', 'low'], ['/b', 'only']]), ID[0])
      await merge(delta(2, [['/a', 'mid']]), ID[1])
      await merge(delta(3, [['/a', 'top']]), ID[2])
      // the visible one and another: one change for /a, its best left
      expect(await remove([{ key: '/a', id: ID[2] }, { key: '/a', id: ID[1] }, { key: '/b', id: ID[0] }])).to.deep.equal(['/a=low', '/b deleted'])
      expect(await value('/a')).to.equal('low')
      expect(await priority('/a')).to.equal(1)
      expect(await value('/b')).to.equal(undefined)
      expect(await ds.has(layout.removedKey('/a', ID[2]))).to.equal(true)
      expect(await ds.has(layout.removedKey('/a', ID[1]))).to.equal(true)
    })

    it('an element equal to the visible value in priority but not in value is beaten: no change', async () => {
      await merge(delta(2, [['/a', 'aaa']]), ID[0])
      await merge(delta(2, [['/a', 'zzz']]), ID[1])
      expect(await value('/a')).to.equal('zzz')
      expect(await remove([{ key: '/a', id: ID[0] }])).to.deep.equal([])
      expect(await value('/a')).to.equal('zzz')
    })
  })
})
