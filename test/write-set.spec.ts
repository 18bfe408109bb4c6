/**
 * Unit spec of the WriteSet (src/crdt/write-set.ts) over a memory datastore:
 * reads see the pending writes, `commit()` lands them in one batch and only
 * then runs the `onCommit` callbacks, reads are remembered until the commit,
 * `prefetch()` and `prefetchByScan()` leave exactly the answers a plain read
 * would give (with the datastore reads they promise), `list()` merges the
 * pending writes into a prefix query in key order.
 *
 * Over datastore-level, reads run in-process (getSync) and must give the
 * same answers.
 *
 * The datastore is wrapped to count reads: the read cache and the prefetches
 * exist to save datastore round trips, so how many happen is their contract.
 */

import { expect } from 'aegir/chai'
import { MemoryDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import fc from 'fast-check'
import { Key } from 'interface-datastore'
import { storeHas, WriteSet } from '../src/crdt/write-set.js'
import { tempDir } from './fixtures/stores.js'
import type { Query } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const dec = (b: Uint8Array | undefined): string | undefined => b == null ? undefined : new TextDecoder().decode(b)

/** A memory datastore that counts reads, queries and the reads in flight at once */
class CountingDatastore extends MemoryDatastore {
  gets = 0
  hases = 0
  queries: string[] = []
  batches = 0
  inFlight = 0
  maxInFlight = 0
  /** a read of a key listed here fails with this error */
  failing = new Map<string, Error>()

  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    this.gets++
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    try {
      await new Promise(resolve => setImmediate(resolve))
      const err = this.failing.get(key.toString())
      if (err != null) throw err
      return await super.get(key, options)
    } finally {
      this.inFlight--
    }
  }

  override async has (key: Key, options?: AbortOptions): Promise<boolean> {
    this.hases++
    return super.has(key, options)
  }

  override query (q: Query, options?: AbortOptions): ReturnType<MemoryDatastore['query']> {
    this.queries.push(q.prefix ?? '')
    return super.query(q, options)
  }

  override batch (): ReturnType<MemoryDatastore['batch']> {
    this.batches++
    return super.batch()
  }

  reset (): void {
    this.gets = 0
    this.hases = 0
    this.queries = []
    this.batches = 0
    this.maxInFlight = 0
  }
}

async function stored (ds: MemoryDatastore, key: string): Promise<string | undefined> {
  return await ds.has(new Key(key)) ? dec(await ds.get(new Key(key))) : undefined
}

describe('WriteSet', () => {
  let ds: CountingDatastore

  beforeEach(async () => {
    ds = new CountingDatastore()
    await ds.put(new Key('/k/a'), enc('A'))
    await ds.put(new Key('/k/b'), enc('B'))
    ds.reset()
  })

  describe('pending writes', () => {
    it('counts distinct keys written, a key written twice once', () => {
      const tx = new WriteSet(ds)
      expect(tx.size).to.equal(0)
      tx.put(new Key('/x'), enc('1'))
      tx.put(new Key('/x'), enc('2'))
      tx.delete(new Key('/y'))
      expect(tx.size).to.equal(2)
    })

    it('get and has see a pending put and a pending delete, before any commit', async () => {
      const tx = new WriteSet(ds)
      tx.put(new Key('/k/c'), enc('C'))
      tx.delete(new Key('/k/a'))
      expect(dec(await tx.get(new Key('/k/c')))).to.equal('C')
      expect(await tx.has(new Key('/k/c'))).to.be.true()
      expect(await tx.get(new Key('/k/a'))).to.be.undefined()
      expect(await tx.has(new Key('/k/a'))).to.be.false()
      // an untouched key reads from the datastore
      expect(dec(await tx.get(new Key('/k/b')))).to.equal('B')
      expect(await tx.has(new Key('/k/b'))).to.be.true()
      expect(await tx.has(new Key('/k/none'))).to.be.false()
      // nothing reached the datastore
      expect(await stored(ds, '/k/c')).to.be.undefined()
      expect(await stored(ds, '/k/a')).to.equal('A')
    })

    it('the last write of a key wins: put after delete, delete after put', async () => {
      const tx = new WriteSet(ds)
      tx.delete(new Key('/k/a'))
      tx.put(new Key('/k/a'), enc('A2'))
      tx.put(new Key('/k/b'), enc('B2'))
      tx.delete(new Key('/k/b'))
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A2')
      expect(await tx.get(new Key('/k/b'))).to.be.undefined()
      await tx.commit()
      expect(await stored(ds, '/k/a')).to.equal('A2')
      expect(await stored(ds, '/k/b')).to.be.undefined()
    })
  })

  describe('commit', () => {
    it('lands every write in one batch, then runs the callbacks in order, once', async () => {
      const tx = new WriteSet(ds)
      const seen: string[] = []
      tx.put(new Key('/k/c'), enc('C'))
      tx.delete(new Key('/k/a'))
      tx.onCommit(() => { seen.push(`first saw c=${String(ds.batches)}`) })
      tx.onCommit(() => { seen.push('second') })
      expect(seen).to.deep.equal([])
      await tx.commit()
      expect(ds.batches).to.equal(1)
      expect(seen).to.deep.equal(['first saw c=1', 'second'])
      expect(await stored(ds, '/k/c')).to.equal('C')
      expect(await stored(ds, '/k/a')).to.be.undefined()
      expect(await stored(ds, '/k/b')).to.equal('B')
      expect(tx.size).to.equal(0)
      // a second commit has nothing to write and no callback to run again
      await tx.commit()
      expect(ds.batches).to.equal(1)
      expect(seen).to.have.length(2)
    })

    it('with no writes opens no batch but still runs the callbacks', async () => {
      const tx = new WriteSet(ds)
      let ran = 0
      tx.onCommit(() => { ran++ })
      await tx.commit()
      expect(ds.batches).to.equal(0)
      expect(ran).to.equal(1)
    })

    it('an aborted signal fails the commit before anything is written or run', async () => {
      const tx = new WriteSet(ds)
      let ran = 0
      tx.put(new Key('/k/c'), enc('C'))
      tx.onCommit(() => { ran++ })
      const controller = new AbortController()
      controller.abort()
      await expect(tx.commit({ signal: controller.signal })).to.eventually.be.rejected.with.property('name', 'AbortError')
      expect(ds.batches).to.equal(0)
      expect(ran).to.equal(0)
      expect(await stored(ds, '/k/c')).to.be.undefined()
      // the writes are still pending and land on a later commit
      await tx.commit({ signal: new AbortController().signal })
      expect(await stored(ds, '/k/c')).to.equal('C')
      expect(ran).to.equal(1)
    })

    it('writes committed once are not written again by a later commit', async () => {
      const tx = new WriteSet(ds)
      tx.put(new Key('/k/c'), enc('C'))
      await tx.commit()
      await ds.delete(new Key('/k/c'))
      await tx.commit()
      expect(await stored(ds, '/k/c')).to.be.undefined()
    })
  })

  describe('read cache', () => {
    it('remembers a value read until commit, then reads the datastore again', async () => {
      const tx = new WriteSet(ds)
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(await tx.get(new Key('/k/none'))).to.be.undefined()
      expect(ds.gets).to.equal(2)
      // changed behind the WriteSet's back (cannot happen under the merge lock)
      await ds.put(new Key('/k/a'), enc('A2'))
      await ds.put(new Key('/k/none'), enc('N'))
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(await tx.get(new Key('/k/none'))).to.be.undefined()
      expect(await tx.has(new Key('/k/a'))).to.be.true()
      expect(await tx.has(new Key('/k/none'))).to.be.false()
      expect(ds.gets).to.equal(2)
      expect(ds.hases).to.equal(0)
      await tx.commit()
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A2')
      expect(dec(await tx.get(new Key('/k/none')))).to.equal('N')
      expect(ds.gets).to.equal(4)
    })

    it('has() does not fill the cache: get() after has() reads the value', async () => {
      const tx = new WriteSet(ds)
      expect(await tx.has(new Key('/k/a'))).to.be.true()
      expect(ds.hases).to.equal(1)
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(ds.gets).to.equal(1)
    })

    it('a read error other than not-found reaches the caller', async () => {
      const tx = new WriteSet(ds)
      const err = Object.assign(new Error('disk on fire'), { name: 'DiskError' })
      ds.failing.set('/k/a', err)
      await expect(tx.get(new Key('/k/a'))).to.eventually.be.rejectedWith('disk on fire')
      ds.failing.delete('/k/a')
      // the failure was not remembered as an absent key
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
    })
  })

  describe('prefetch', () => {
    it('reads each missing key once, so later gets and has read nothing', async () => {
      const tx = new WriteSet(ds)
      tx.put(new Key('/k/p'), enc('P'))
      await tx.get(new Key('/k/b'))
      ds.reset()
      const keys = ['/k/a', '/k/a', '/k/b', '/k/p', '/k/none'].map(k => new Key(k))
      await tx.prefetch(keys)
      // /k/a once (deduplicated), /k/none; not /k/b (read) nor /k/p (pending)
      expect(ds.gets).to.equal(2)
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(dec(await tx.get(new Key('/k/b')))).to.equal('B')
      expect(dec(await tx.get(new Key('/k/p')))).to.equal('P')
      expect(await tx.get(new Key('/k/none'))).to.be.undefined()
      expect(await tx.has(new Key('/k/a'))).to.be.true()
      expect(await tx.has(new Key('/k/none'))).to.be.false()
      expect(ds.gets).to.equal(2)
      expect(ds.hases).to.equal(0)
    })

    it('keeps at most 1000 reads in flight and reads every key of a larger set', async () => {
      const many = new CountingDatastore()
      const keys: Key[] = []
      for (let i = 0; i < 2500; i++) {
        const key = new Key(`/m/${i}`)
        keys.push(key)
        if (i % 2 === 0) await many.put(key, enc(`v${i}`))
      }
      many.reset()
      const tx = new WriteSet(many)
      await tx.prefetch(keys)
      expect(many.gets).to.equal(2500)
      expect(many.maxInFlight).to.equal(1000)
      expect(dec(await tx.get(keys[2498]))).to.equal('v2498')
      expect(await tx.get(keys[2499])).to.be.undefined()
      expect(dec(await tx.get(keys[0]))).to.equal('v0')
      expect(many.gets).to.equal(2500)
    })

    it('with existence asks has() only; has() then reads nothing and get() still reads the value', async () => {
      const tx = new WriteSet(ds)
      await tx.prefetch([new Key('/k/a'), new Key('/k/none')], { existence: true })
      expect(ds.hases).to.equal(2)
      expect(ds.gets).to.equal(0)
      expect(await tx.has(new Key('/k/a'))).to.be.true()
      expect(await tx.has(new Key('/k/none'))).to.be.false()
      expect(ds.hases).to.equal(2)
      expect(await tx.get(new Key('/k/none'))).to.be.undefined()
      expect(ds.gets).to.equal(0)
      // known present, value not read yet: get() reads it, once
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(dec(await tx.get(new Key('/k/a')))).to.equal('A')
      expect(ds.gets).to.equal(1)
    })

    it('with existence: false reads values', async () => {
      const tx = new WriteSet(ds)
      await tx.prefetch([new Key('/k/a')], { existence: false })
      expect(ds.gets).to.equal(1)
      expect(ds.hases).to.equal(0)
    })
  })

  describe('prefetchByScan', () => {
    beforeEach(async () => {
      for (const k of ['/p/x/1', '/p/x/2', '/p/x/3', '/p/y']) await ds.put(new Key(k), enc(k))
      ds.reset()
    })

    it('one query over the common prefix decides found and absent keys alike', async () => {
      const tx = new WriteSet(ds)
      const complete = await tx.prefetchByScan(['/p/x/1', '/p/x/3', '/p/x/9'].map(k => new Key(k)), 10)
      expect(complete).to.be.true()
      expect(ds.queries).to.deep.equal(['/p/x/'])
      expect(ds.gets + ds.hases).to.equal(0)
      expect(dec(await tx.get(new Key('/p/x/1')))).to.equal('/p/x/1')
      expect(dec(await tx.get(new Key('/p/x/3')))).to.equal('/p/x/3')
      expect(await tx.get(new Key('/p/x/9'))).to.be.undefined()
      expect(await tx.has(new Key('/p/x/9'))).to.be.false()
      // the scan's other entry was kept too
      expect(dec(await tx.get(new Key('/p/x/2')))).to.equal('/p/x/2')
      expect(ds.gets + ds.hases).to.equal(0)
    })

    it('skips pending and already read keys, and does nothing when none is left', async () => {
      const tx = new WriteSet(ds)
      tx.put(new Key('/p/x/1'), enc('pending'))
      tx.delete(new Key('/p/x/2'))
      await tx.get(new Key('/p/y'))
      ds.reset()
      expect(await tx.prefetchByScan([new Key('/p/x/1'), new Key('/p/y')], 10)).to.be.true()
      expect(ds.queries).to.deep.equal([])
      expect(await tx.prefetchByScan([], 10)).to.be.true()
      expect(ds.queries).to.deep.equal([])
      // the prefix comes from the keys left (/p/x/3 alone), not the pending /p/x/1
      expect(await tx.prefetchByScan([new Key('/p/x/1'), new Key('/p/x/3')], 10)).to.be.true()
      expect(ds.queries).to.deep.equal(['/p/x/3'])
      // a scanned entry never hides a pending write
      await tx.prefetchByScan([new Key('/p/x/4'), new Key('/p/x/5')], 10)
      expect(ds.queries).to.deep.equal(['/p/x/3', '/p/x/'])
      expect(dec(await tx.get(new Key('/p/x/1')))).to.equal('pending')
      expect(await tx.get(new Key('/p/x/2'))).to.be.undefined()
    })

    it('a scan cut short at maxEntries reads the undecided keys one by one', async () => {
      const tx = new WriteSet(ds)
      const keys = ['/p/x/1', '/p/x/3', '/p/x/9'].map(k => new Key(k))
      expect(await tx.prefetchByScan(keys, 1)).to.be.false()
      // /p/x/1 came with the scan; /p/x/3 and /p/x/9 were read
      expect(ds.gets).to.equal(2)
      expect(dec(await tx.get(keys[0]))).to.equal('/p/x/1')
      expect(dec(await tx.get(keys[1]))).to.equal('/p/x/3')
      expect(await tx.get(keys[2])).to.be.undefined()
      expect(ds.gets).to.equal(2)
    })

    it('a scan exactly maxEntries long is complete', async () => {
      const tx = new WriteSet(ds)
      expect(await tx.prefetchByScan([new Key('/p/x/1'), new Key('/p/x/8')], 3)).to.be.true()
      expect(ds.gets).to.equal(0)
      expect(await tx.get(new Key('/p/x/8'))).to.be.undefined()
    })

    it('keys the prefix query cannot prove absent (next character U+00FF or above) are read', async () => {
      // an absent key whose next character after the prefix is U+00FF must
      // still be read, not assumed absent (datastore-level's range would miss it)
      const tx = new WriteSet(ds)
      const plain = new Key('/q/a')
      const odd = new Key('/q/\u00ffz')
      const lower = new Key('/q/\u00fez')
      await tx.prefetchByScan([plain, odd, lower], 10)
      // the common prefix is /q/; /q/\u00fez is below U+00FF and decided by the scan
      expect(ds.queries).to.deep.equal(['/q/'])
      expect(ds.gets).to.equal(1)
      expect(await tx.get(odd)).to.be.undefined()
      expect(await tx.get(lower)).to.be.undefined()
      expect(await tx.get(plain)).to.be.undefined()
      expect(ds.gets).to.equal(1)
    })

    it('a scan one entry longer than maxEntries is cut short', async () => {
      const tx = new WriteSet(ds)
      // /p/x/ holds three entries: two fit, the third cuts the scan
      expect(await tx.prefetchByScan([new Key('/p/x/1'), new Key('/p/x/9')], 2)).to.be.false()
      expect(ds.gets).to.equal(1)
      expect(await new WriteSet(ds).prefetchByScan([new Key('/p/x/1'), new Key('/p/x/9')], 3)).to.be.true()
    })

    it('a scan never replaces a value already read in the same WriteSet', async () => {
      const tx = new WriteSet(ds)
      expect(dec(await tx.get(new Key('/p/x/1')))).to.equal('/p/x/1')
      // changed behind the WriteSet's back (cannot happen under the merge lock)
      await ds.put(new Key('/p/x/1'), enc('changed'))
      await tx.prefetchByScan([new Key('/p/x/8'), new Key('/p/x/9')], 10)
      expect(ds.queries).to.deep.equal(['/p/x/'])
      expect(dec(await tx.get(new Key('/p/x/1')))).to.equal('/p/x/1')
    })

    it('a single key is its own prefix and is decided by the scan', async () => {
      const tx = new WriteSet(ds)
      expect(await tx.prefetchByScan([new Key('/p/x/7')], 5)).to.be.true()
      expect(ds.queries).to.deep.equal(['/p/x/7'])
      expect(await tx.get(new Key('/p/x/7'))).to.be.undefined()
      expect(ds.gets).to.equal(0)
    })

    it('the common prefix stops at the first differing character', async () => {
      const tx = new WriteSet(ds)
      await tx.prefetchByScan([new Key('/p/x/1'), new Key('/p/y')], 10)
      expect(ds.queries).to.deep.equal(['/p/'])
      await new WriteSet(ds).prefetchByScan([new Key('/p/x/2/deeper'), new Key('/p/x/2')], 10)
      expect(ds.queries).to.deep.equal(['/p/', '/p/x/2'])
    })
  })

  describe('list', () => {
    it('lists a prefix with the pending writes applied, in key order', async () => {
      await ds.put(new Key('/l/b'), enc('b'))
      await ds.put(new Key('/l/d'), enc('d'))
      await ds.put(new Key('/la'), enc('outside'))
      const tx = new WriteSet(ds)
      tx.put(new Key('/l/a'), enc('a'))
      tx.put(new Key('/l/d'), enc('d2'))
      tx.delete(new Key('/l/b'))
      tx.put(new Key('/m/z'), enc('outside'))
      tx.put(new Key('/l/c'), enc('c'))
      const listed = await tx.list('/l/')
      expect(listed.map(e => [e.key, dec(e.value)])).to.deep.equal([['/l/a', 'a'], ['/l/c', 'c'], ['/l/d', 'd2']])
    })

    it('sorts by code unit, deleted pending keys absent even if never stored', async () => {
      const tx = new WriteSet(ds)
      for (const k of ['/s/b', '/s/B', '/s/a', '/s/ab', '/s/b']) tx.put(new Key(k), enc(k))
      tx.delete(new Key('/s/zz'))
      const listed = await tx.list('/s/')
      expect(listed.map(e => e.key)).to.deep.equal(['/s/B', '/s/a', '/s/ab', '/s/b'])
    })
  })
})

describe('WriteSet over datastore-level', () => {
  it('reads in-process from the same LevelDB, with the answers the datastore\'s own reads give', async () => {
    const dir = await tempDir('write-set-level')
    const store = new LevelDatastore(dir.path)
    await store.open()
    try {
      await store.put(new Key('/a'), enc('A'))
      await store.put(new Key('/b/c'), enc('BC'))
      await store.put(new Key('/ÿ€'), enc('high'))
      let awaited = 0
      const get = store.get.bind(store)
      const has = store.has.bind(store)
      store.get = async (key, options) => { awaited++; return get(key, options) }
      store.has = async (key, options) => { awaited++; return has(key, options) }

      const tx = new WriteSet(store)
      expect(dec(await tx.get(new Key('/a')))).to.equal('A')
      expect(await tx.get(new Key('/missing'))).to.equal(undefined)
      expect(await tx.has(new Key('/b/c'))).to.equal(true)
      expect(await tx.has(new Key('/b'))).to.equal(false)
      await tx.prefetch([new Key('/ÿ€'), new Key('/gone'), new Key('/a')], { existence: true })
      expect(dec(await tx.get(new Key('/ÿ€')))).to.equal('high')
      expect(await tx.has(new Key('/gone'))).to.equal(false)
      // nothing went through the datastore's awaited reads
      expect(awaited).to.equal(0)
      // pending writes still win over the store
      tx.put(new Key('/a'), enc('A2'))
      tx.delete(new Key('/b/c'))
      expect(dec(await tx.get(new Key('/a')))).to.equal('A2')
      expect(await tx.has(new Key('/b/c'))).to.equal(false)
      await tx.commit()
      expect(dec(await get(new Key('/a')))).to.equal('A2')
      expect(await has(new Key('/b/c'))).to.equal(false)
      // storeHas reads the same LevelDB in-process too
      expect(await storeHas(store, new Key('/a'))).to.equal(true)
      expect(await storeHas(store, new Key('/b/c'))).to.equal(false)
      expect(awaited).to.equal(0)

      // a closed datastore is read the usual way, which reports it
      await store.close()
      const late = new WriteSet(store)
      await expect(late.get(new Key('/a'))).to.eventually.be.rejected()
      expect(awaited).to.equal(1)
    } finally {
      if (store.db.status === 'open') await store.close()
      await dir.remove()
    }
  })
})

describe('WriteSet prefix scans over datastore-level', () => {
  /** Runs `fn` over a LevelDatastore in a temp dir, closed and removed after */
  async function withLevelStore (name: string, fn: (store: LevelDatastore) => Promise<void>): Promise<void> {
    const dir = await tempDir(name)
    const store = new LevelDatastore(dir.path)
    await store.open()
    try {
      await fn(store)
    } finally {
      await store.close()
      await dir.remove()
    }
  }

  /** A character from ASCII, Latin-1 (U+00FE and U+00FF among them), CJK or an astral plane */
  const char = fc.oneof(
    fc.integer({ min: 0x30, max: 0x7a }),
    fc.integer({ min: 0xf0, max: 0xff }),
    fc.integer({ min: 0x4e00, max: 0x4e10 }),
    fc.integer({ min: 0x1f600, max: 0x1f610 })
  ).map(code => String.fromCodePoint(code))
  /** A key name of 1 to `max` such characters */
  const text = (max: number): fc.Arbitrary<string> => fc.array(char, { minLength: 1, maxLength: max }).map(chars => chars.join(''))

  it('decides the keys it was given as the datastore\'s own reads do, in one LevelDB read and no query, any Unicode', async () => {
    await withLevelStore('write-set-scan', async (store) => {
      const get = store.get.bind(store)
      let queries = 0
      const query = store.query.bind(store)
      store.query = (q, options) => { queries++; return query(q, options) }
      let round = 0
      // names under the round's prefix, each stored or not and asked or not, and the scan's limit
      const cases = fc.record({
        names: fc.array(fc.record({ name: text(4), stored: fc.boolean(), asked: fc.integer({ min: 0, max: 4 }).map(n => n > 0) }), { minLength: 1, maxLength: 12 }),
        maxEntries: fc.integer({ min: 1, max: 8 })
      })
      await fc.assert(fc.asyncProperty(cases, async ({ names: entries, maxEntries }) => {
        const prefix = `/r${round++}/`
        const names = entries.map(e => `${prefix}${e.name}`)
        const stored = names.filter((_, i) => entries[i].stored)
        for (const name of stored) await store.put(new Key(name, false), enc(`v:${name}`))
        const asked = names.filter((_, i) => entries[i].asked)
        const tx = new WriteSet(store)
        const complete = await tx.prefetchByScan(asked.map(name => new Key(name, false)), maxEntries)
        const held = new Set(stored).size
        if (held <= maxEntries) expect(complete, `${held} entries under the prefix, ${maxEntries} allowed`).to.equal(true)
        for (const name of names) {
          const key = new Key(name, false)
          const expected = await get(key).then(v => dec(v), () => undefined)
          const answer = await tx.get(key)
          expect(answer == null ? undefined : dec(answer), JSON.stringify(name)).to.equal(expected)
        }
      }), { numRuns: 60 })
      expect(queries, 'no datastore query: the scans read LevelDB directly').to.equal(0)
    })
  })

  it('lists a prefix of thousands of entries in-process as the datastore\'s query does, pending writes applied', async () => {
    await withLevelStore('write-set-list', async (store) => {
      const names = new Set(fc.sample(text(5), { numRuns: 4_000, seed: 15 }).map(name => `/l/${name}`))
      expect(names.size, 'thousands of distinct names').to.be.above(2_000)
      const batch = store.batch()
      for (const name of names) batch.put(new Key(name, false), enc(`v:${name}`))
      // beside the prefix: never listed
      batch.put(new Key('/l', false), enc('the prefix itself, without its slash'))
      batch.put(new Key('/m/after', false), enc('after'))
      await batch.commit()
      let queries = 0
      const query = store.query.bind(store)
      store.query = (q, options) => { queries++; return query(q, options) }
      const tx = new WriteSet(store)
      const [gone, changed] = [...names].filter(n => n.charCodeAt(3) < 0xff).slice(0, 2) as [string, string]
      tx.delete(new Key(gone, false))
      tx.put(new Key(changed, false), enc('pending'))
      tx.put(new Key('/l/\u{1f600}new', false), enc('new'))
      const listed = await tx.list('/l/')
      expect(queries, 'read in-process').to.equal(0)
      const expected = new Map<string, string>()
      for await (const { key, value } of query({ prefix: '/l/' })) expected.set(key.toString(), new TextDecoder().decode(value))
      expected.delete(gone)
      expected.set(changed, 'pending')
      expected.set('/l/\u{1f600}new', 'new')
      const sorted = [...expected.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
      expect(listed.map(({ key, value }) => [key, dec(value)])).to.deep.equal(sorted)
    })
  })

  it('a scan longer than one LevelDB read (its byte budget) is complete, or cut short, only where it truly is', async () => {
    await withLevelStore('write-set-long-scan', async (store) => {
      const batch = store.batch()
      // 3,000 entries of 200 bytes: far more than one nextv() hands over
      for (let i = 0; i < 3_000; i++) batch.put(new Key(`/n/${String(i).padStart(5, '0')}`), new Uint8Array(200).fill(i % 256))
      await batch.commit()
      const asked = [new Key('/n/00001'), new Key('/n/02999'), new Key('/n/03000')]
      const cut = new WriteSet(store)
      expect(await cut.prefetchByScan(asked, 2_999), 'one entry more than allowed').to.equal(false)
      const whole = new WriteSet(store)
      expect(await whole.prefetchByScan(asked, 3_000), 'exactly as many as allowed').to.equal(true)
      for (const tx of [cut, whole]) {
        expect(await tx.get(new Key('/n/02999'))).to.equalBytes(new Uint8Array(200).fill(2999 % 256))
        expect(await tx.get(new Key('/n/03000'))).to.equal(undefined)
      }
      expect(await whole.list('/n/')).to.have.lengthOf(3_000)
    })
  })

  it('an aborted signal stops a scan before it reads', async () => {
    await withLevelStore('write-set-scan-abort', async (store) => {
      await store.put(new Key('/s/a'), enc('A'))
      const controller = new AbortController()
      controller.abort(new Error('stop'))
      await expect(new WriteSet(store).prefetchByScan([new Key('/s/a'), new Key('/s/b')], 10, { signal: controller.signal })).to.eventually.be.rejectedWith('stop')
    })
  })
})

/**
 * A memory datastore exposing an in-process reader of the shape
 * datastore-level gives over classic-level (`db.getSync` with utf8 keys and
 * view values), so the WriteSet's in-process path can be driven to its
 * edges: the encodings it accepts, a long prefetch giving the event loop a
 * turn, a store closing in the middle of one.
 */
class InProcessDatastore extends CountingDatastore {
  syncReads = 0
  private readonly values = new Map<string, Uint8Array>()
  readonly db: { status: string, supports: { getSync: boolean }, getSync?: unknown, keyEncoding(): { name: string }, valueEncoding(): { name: string } }

  constructor (shape: { getSync?: 'missing', keys?: string, values?: string } = {}) {
    super()
    this.db = {
      status: 'open',
      supports: { getSync: true },
      getSync: shape.getSync === 'missing'
        ? undefined
        : (key: string): Uint8Array | undefined => {
            this.syncReads++
            return this.values.get(key)
          },
      keyEncoding: () => ({ name: shape.keys ?? 'utf8' }),
      valueEncoding: () => ({ name: shape.values ?? 'view' })
    }
  }

  override async put (key: Key, value: Uint8Array, options?: AbortOptions): Promise<Key> {
    this.values.set(key.toString(), value)
    return super.put(key, value, options)
  }

  override async delete (key: Key, options?: AbortOptions): Promise<void> {
    this.values.delete(key.toString())
    await super.delete(key, options)
  }
}

describe('WriteSet commits over datastore-level', () => {
  /** A LevelDatastore whose LevelDB counts the batches it is handed */
  async function levelStore (): Promise<{ store: LevelDatastore, batches: Array<Array<{ type: string, key: unknown }>>, remove(): Promise<void> }> {
    const dir = await tempDir('write-set-commit')
    const store = new LevelDatastore(dir.path)
    await store.open()
    const batches: Array<Array<{ type: string, key: unknown }>> = []
    const db = store.db as unknown as { batch(ops: Array<{ type: string, key: unknown }>): Promise<void> }
    const batch = db.batch.bind(db)
    db.batch = async (ops) => { batches.push(ops); await batch(ops) }
    return {
      store,
      batches,
      remove: async () => {
        if (store.db.status === 'open') await store.close()
        await dir.remove()
      }
    }
  }

  it('hands a plain LevelDatastore\'s LevelDB one batch of key strings, Keys and strings alike, with what the datastore reads back', async () => {
    const { store, batches, remove } = await levelStore()
    try {
      await store.put(new Key('/gone'), enc('x'))
      batches.length = 0
      // counted on the class, so the instance's batch() is still the class's own
      let viaDatastore = 0
      const proto = LevelDatastore.prototype as unknown as { batch(): unknown }
      const own = proto.batch
      proto.batch = function (this: LevelDatastore) { viaDatastore++; return own.call(this) }
      const tx = new WriteSet(store)
      tx.put(new Key('/a'), enc('A'))
      tx.put('/ÿ€/b', enc('high'))
      tx.delete('/gone')
      tx.put('/a', enc('A2'))
      try {
        await tx.commit()
      } finally {
        proto.batch = own
      }
      expect(batches).to.have.length(1)
      expect(batches[0].map(op => [op.type, op.key])).to.deep.equal([['put', '/a'], ['put', '/ÿ€/b'], ['del', '/gone']])
      expect(dec(await store.get(new Key('/a')))).to.equal('A2')
      expect(dec(await store.get(new Key('/ÿ€/b')))).to.equal('high')
      expect(await store.has(new Key('/gone'))).to.equal(false)
      expect(viaDatastore).to.equal(0)
    } finally {
      await remove()
    }
  })

  it('writes through a batch() that is not LevelDatastore\'s own (replaced, proxied, overridden), so what it does on a batch still happens', async () => {
    const { store, batches, remove } = await levelStore()
    try {
      // replaced on the instance
      let replaced = 0
      const own = store.batch.bind(store)
      store.batch = () => { replaced++; return own() }
      const tx = new WriteSet(store)
      tx.put('/r', enc('1'))
      await tx.commit()
      expect(replaced).to.equal(1)
      // a proxy refusing batches: nothing lands
      const proxy = new Proxy(store, {
        get (target, prop) {
          if (prop === 'batch') return () => ({ put () {}, delete () {}, commit: async () => { throw new Error('refused') } })
          const value = Reflect.get(target, prop)
          return typeof value === 'function' ? value.bind(target) : value
        }
      })
      const refused = new WriteSet(proxy)
      refused.put('/p', enc('1'))
      await expect(refused.commit()).to.eventually.be.rejected.with.property('message', 'refused')
      expect(await store.has(new Key('/p'))).to.equal(false)
      // a subclass overriding batch()
      class Audited extends LevelDatastore {
        audited = 0
        override batch (): ReturnType<LevelDatastore['batch']> {
          this.audited++
          return super.batch()
        }
      }
      const dir = await tempDir('write-set-audited')
      const audited = new Audited(dir.path)
      await audited.open()
      try {
        const tx2 = new WriteSet(audited)
        tx2.put('/s', enc('1'))
        await tx2.commit()
        expect(audited.audited).to.equal(1)
        expect(dec(await audited.get(new Key('/s')))).to.equal('1')
      } finally {
        await audited.close()
        await dir.remove()
      }
      // each went through the datastore's batch, which hands LevelDB its own ops
      expect(batches.map(ops => ops.map(op => op.key))).to.deep.equal([['/r']])
    } finally {
      await remove()
    }
  })

  it('a closed LevelDatastore is written through its batch(), which reports it; nothing is applied', async () => {
    const { store, batches, remove } = await levelStore()
    try {
      const tx = new WriteSet(store)
      tx.put('/a', enc('A'))
      let done = false
      tx.onCommit(() => { done = true })
      await store.close()
      await expect(tx.commit()).to.eventually.be.rejected()
      expect(done).to.equal(false)
      // handed on by datastore-level's batch, refused by the closed LevelDB
      expect(batches).to.have.length(1)
      await store.open()
      expect(await store.has(new Key('/a'))).to.equal(false)
    } finally {
      await remove()
    }
  })
})

describe('WriteSet over an in-process reader: edges a mutation run found', () => {
  const many = (n: number): Key[] => Array.from({ length: n }, (_, i) => new Key(`/m/${String(i).padStart(4, '0')}`))

  it('reads in-process only from a reader with getSync, utf8 keys and view values; any other is read through the datastore', async () => {
    for (const [shape, inProcess] of [
      [{}, true],
      [{ getSync: 'missing' }, false],
      [{ keys: 'buffer' }, false],
      [{ values: 'utf8' }, false],
      [{ keys: 'buffer', values: 'utf8' }, false]
    ] as Array<[ConstructorParameters<typeof InProcessDatastore>[0], boolean]>) {
      const store = new InProcessDatastore(shape)
      await store.put(new Key('/a'), enc('A'))
      store.reset()
      const tx = new WriteSet(store)
      expect(dec(await tx.get(new Key('/a'))), JSON.stringify(shape)).to.equal('A')
      expect(await tx.has(new Key('/b')), JSON.stringify(shape)).to.equal(false)
      expect([store.syncReads, store.gets + store.hases], JSON.stringify(shape)).to.deep.equal(inProcess ? [2, 0] : [0, 2])
    }
  })

  it('storeHas answers in-process when the reader allows, through has() otherwise, and through has() once the store is no longer open', async () => {
    const store = new InProcessDatastore()
    await store.put(new Key('/a'), enc('A'))
    store.reset()
    expect(await storeHas(store, new Key('/a'))).to.equal(true)
    expect(await storeHas(store, new Key('/b'))).to.equal(false)
    expect([store.syncReads, store.hases]).to.deep.equal([2, 0])
    store.db.status = 'closing'
    expect(await storeHas(store, new Key('/a'))).to.equal(true)
    expect([store.syncReads, store.hases]).to.deep.equal([2, 1])
    const plain = new CountingDatastore()
    await plain.put(new Key('/a'), enc('A'))
    expect(await storeHas(plain, new Key('/a'))).to.equal(true)
    expect(await storeHas(plain, new Key('/b'))).to.equal(false)
    expect(plain.hases).to.equal(2)
    const controller = new AbortController()
    controller.abort()
    await expect(storeHas(store, new Key('/a'), { signal: controller.signal })).to.eventually.be.rejected.with.property('name', 'AbortError')
  })

  it('looks for the reader once per datastore, not once per WriteSet', async () => {
    const store = new InProcessDatastore()
    let looked = 0
    const db = store.db
    Object.defineProperty(store, 'db', { get: () => { looked++; return db } })
    for (let i = 0; i < 3; i++) await new WriteSet(store).get(new Key('/a'))
    expect(looked).to.equal(1)
    expect(store.syncReads).to.equal(3)
  })

  it('a prefetch of a few keys reads them in-process into the cache (a change behind it is not seen before commit), skipping keys pending or read already', async () => {
    const store = new InProcessDatastore()
    for (const k of ['/a', '/b', '/c']) await store.put(new Key(k), enc(k))
    store.reset()
    const tx = new WriteSet(store)
    tx.put(new Key('/a'), enc('pending'))
    expect(dec(await tx.get(new Key('/b')))).to.equal('/b')
    expect(store.syncReads).to.equal(1)
    await tx.prefetch([new Key('/a'), new Key('/b'), new Key('/c'), new Key('/gone')])
    // only /c and /gone were read
    expect(store.syncReads).to.equal(3)
    await store.put(new Key('/b'), enc('behind'))
    await store.put(new Key('/c'), enc('behind'))
    await store.put(new Key('/gone'), enc('behind'))
    expect(dec(await tx.get(new Key('/a')))).to.equal('pending')
    expect(dec(await tx.get(new Key('/b')))).to.equal('/b')
    expect(dec(await tx.get(new Key('/c')))).to.equal('/c')
    expect(await tx.has(new Key('/gone'))).to.equal(false)
    expect([store.syncReads, store.gets + store.hases]).to.deep.equal([3, 0])
  })

  it('a long prefetch reads every key in-process, none through the datastore, and each once', async () => {
    const store = new InProcessDatastore()
    const keys = many(1100)
    for (const k of keys) await store.put(k, enc(k.toString()))
    store.reset()
    const tx = new WriteSet(store)
    await tx.prefetch(keys, { existence: true })
    expect([store.syncReads, store.gets + store.hases]).to.deep.equal([1100, 0])
    for (const k of [keys[0], keys[511], keys[512], keys[1099]]) expect(dec(await tx.get(k))).to.equal(k.toString())
    expect(store.syncReads).to.equal(1100)
  })

  it('a long prefetch gives the event loop a turn after every 512 reads; an abort lands there', async () => {
    const store = new InProcessDatastore()
    const keys = many(1100)
    for (const k of keys) await store.put(k, enc(k.toString()))
    store.reset()
    const controller = new AbortController()
    // queued before the prefetch starts: it runs at the prefetch's first turn
    setImmediate(() => { controller.abort() })
    await expect(new WriteSet(store).prefetch(keys, { signal: controller.signal })).to.eventually.be.rejected.with.property('name', 'AbortError')
    expect(store.syncReads).to.equal(512)
  })

  it('a store closing during a long prefetch: the keys left are read through the datastore', async () => {
    const store = new InProcessDatastore()
    const keys = many(1100)
    for (const k of keys) await store.put(k, enc(k.toString()))
    store.reset()
    setImmediate(() => { store.db.status = 'closing' })
    const tx = new WriteSet(store)
    await tx.prefetch(keys)
    expect([store.syncReads, store.gets]).to.deep.equal([512, 588])
    for (const k of [keys[0], keys[511], keys[512], keys[1099]]) expect(dec(await tx.get(k))).to.equal(k.toString())
    expect([store.syncReads, store.gets]).to.deep.equal([512, 588])
  })
})
