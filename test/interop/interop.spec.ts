/**
 * Wire compatibility against real go-ds-crdt v0.6.8 replicas: Go and TS
 * replicas on 127.0.0.1 exchange heads over gossipsub and blocks over
 * bitswap, and must end with the same keys, values and heads.
 *
 * When it cannot run (`go` not on PATH, the module proxy unreachable,
 * `GO_CRDT_REPLICA` naming no file) it prints one `interop suite NOT RUN:
 * <why>` line. On a developer's machine it is then skipped; in CI (`CI` set,
 * as `.ci/run` runs under CI=true) or with `INTEROP_REQUIRED=1` the suite
 * fails instead, so CI can never pass without running it.
 */

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import {
  GoCommandError, GoReplica, converged, dec, enc, ensureGoReplicaBinary, hex, link, startTsReplica, tsHeadCids, tsHeads, tsList,
  tsWaitCount, tsWaitFor
} from './fixtures/go-replica.js'
import type { GoReplicaOptions, TsReplica } from './fixtures/go-replica.js'
import type { HeliaCRDTInit } from '../../src/helia/index.js'

/** The block of `put("/hello","world")` on an empty store (wire-format.md §2) */
const HELLO_CID = 'bafybeidsfjpejlb67ieikrewsjvlxd3giucznszgdcb6qhclkyk2hvonta'
const HELLO_BLOCK = '0a130a0f0a062f68656c6c6f1a05776f726c641801'

/**
 * Why the suite must run rather than skip, or undefined when a skip is
 * allowed: `INTEROP_REQUIRED=1`, or `CI` set to anything but "", "0" or
 * "false" (GitHub Actions, GitLab and most CI services set CI=true)
 */
function interopRequiredBy (env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.INTEROP_REQUIRED === '1') return 'INTEROP_REQUIRED=1'
  const ci = env.CI?.trim().toLowerCase()
  if (ci != null && ci !== '' && ci !== '0' && ci !== 'false') return `CI=${env.CI}`
  return undefined
}

describe('when the interop suite may be skipped', () => {
  it('never in CI or with INTEROP_REQUIRED=1; otherwise yes', () => {
    expect(interopRequiredBy({ CI: 'true' })).to.equal('CI=true')
    expect(interopRequiredBy({ CI: '1' })).to.equal('CI=1')
    expect(interopRequiredBy({ INTEROP_REQUIRED: '1' })).to.equal('INTEROP_REQUIRED=1')
    expect(interopRequiredBy({ INTEROP_REQUIRED: '1', CI: 'false' })).to.equal('INTEROP_REQUIRED=1')
    expect(interopRequiredBy({})).to.equal(undefined)
    expect(interopRequiredBy({ CI: 'false' })).to.equal(undefined)
    expect(interopRequiredBy({ CI: '0' })).to.equal(undefined)
    expect(interopRequiredBy({ CI: '' })).to.equal(undefined)
  })
})

describe('interop with go-ds-crdt v0.6.8 replicas', function () {
  this.timeout(300_000)

  let binary = ''
  const open = new Set<{ close(): Promise<void> }>()
  const dirs: string[] = []

  before(async function () {
    this.timeout(15 * 60_000) // the first build downloads Go modules
    const result = await ensureGoReplicaBinary()
    if (!result.ok) {
      const required = interopRequiredBy()

      console.log(`      interop suite NOT RUN: ${result.reason}${required == null ? '' : ` (required by ${required}: failing)`}`)
      if (required != null) throw new Error(`interop suite NOT RUN: ${result.reason}; ${required} requires it`)
      this.skip()
    } else {
      binary = result.path
    }
  })

  afterEach(async function () {
    this.timeout(60_000)
    const all = [...open]
    open.clear()
    const results = await Promise.allSettled(all.map(async r => r.close()))
    await Promise.all(dirs.splice(0).map(async d => rm(d, { recursive: true, force: true })))
    const failed = results.find(r => r.status === 'rejected')
    if (failed != null) throw (failed as PromiseRejectedResult).reason
  })

  async function go (options: GoReplicaOptions = {}): Promise<GoReplica> {
    const r = await GoReplica.start(binary, options)
    open.add(r)
    return r
  }

  async function ts (init: Partial<HeliaCRDTInit> = {}): Promise<TsReplica> {
    const r = await startTsReplica(init)
    open.add(r)
    return r
  }

  async function tempDir (): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'crdt-interop-'))
    dirs.push(d)
    return d
  }

  /** A Go and a TS replica, linked */
  async function pair (): Promise<{ g: GoReplica, t: TsReplica }> {
    const [g, t] = await Promise.all([go(), ts()])
    await link(t, g)
    return { g, t }
  }

  async function tsBlockHex (t: TsReplica, cid: string): Promise<string> {
    const chunks: Uint8Array[] = []
    for await (const chunk of t.node.blockstore.get(CID.parse(cid))) chunks.push(chunk)
    return hex(Buffer.concat(chunks))
  }

  /** Both sides list the same heads */
  async function sameHeads (t: TsReplica, g: GoReplica, timeout = 20_000): Promise<string[]> {
    const deadline = Date.now() + timeout
    let a: string[] = []
    let b: string[] = []
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      a = tsHeadCids(t)
      b = (await g.heads()).map(h => h.cid).sort()
      if (JSON.stringify(a) === JSON.stringify(b)) return a
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    expect(a, `TS heads vs Go heads (TS ${JSON.stringify(tsHeads(t))}, Go ${JSON.stringify(await g.heads())})`).to.deep.equal(b)
    return a
  }

  describe('Go writes, TS reads', () => {
    it('single puts, overwrites and deletes', async () => {
      const { g, t } = await pair()
      await g.put('/g/a', 'one')
      await g.put('/g/b', 'two')
      // a replica merges a new head before the nodes under it: wait for each key
      await tsWaitFor(t, '/g/a', 'one')
      await tsWaitFor(t, '/g/b', 'two')
      expect(await tsList(t.store, '/g/')).to.deep.equal([['/g/a', hex('one')], ['/g/b', hex('two')]])

      await g.put('/g/a', 'one, again')
      await g.delete('/g/b')
      await tsWaitFor(t, '/g/a', 'one, again')
      await tsWaitFor(t, '/g/b', null)
      expect(await tsList(t.store, '/g/')).to.deep.equal([['/g/a', hex('one, again')]])

      // binary values travel untouched
      const bytes = Uint8Array.from({ length: 256 }, (_, i) => i)
      await g.put('/g/bin', bytes)
      await converged(t, g, '/g/')
      expect(await t.store.get(new Key('/g/bin'))).to.deep.equal(bytes)
      const heads = await sameHeads(t, g)
      expect(heads).to.have.length(1)
      expect(t.store.heads()[0].height).to.equal(5)
    })

    it('a batch of 1,000 puts, then one of 500 overwrites and 500 deletes', async () => {
      const { g, t } = await pair()
      await g.bulk('/gb/', 1000, 1000, 'first-')
      expect(await g.heads()).to.have.length(1).and.nested.property('[0].height', 1)
      await tsWaitCount(t, '/gb/', 1000)

      const ops: Parameters<GoReplica['batch']>[0] = []
      for (let i = 0; i < 1000; i++) ops.push(i < 500 ? { op: 'put', key: `/gb/${i}`, value: `second-${i}` } : { op: 'delete', key: `/gb/${i}` })
      await g.batch(ops)
      await tsWaitCount(t, '/gb/', 500)
      const entries = await converged(t, g, '/gb/')
      expect(entries).to.have.length(500)
      expect(entries.every(([k, v]) => dec(Buffer.from(v, 'hex')) === `second-${k.slice(4)}`)).to.equal(true)
      await sameHeads(t, g)
      expect(t.store.heads()[0].height).to.equal(2)
    })
  })

  describe('TS writes, Go reads', () => {
    it('a Go replica still fetches from a TS node after its bitswap stream sat idle past Helia\'s 10 s default', async () => {
      // boxo keeps one outbound bitswap stream per peer and does not reopen it
      // after Helia resets it for idleness; createReplicaNode keeps idle streams
      const { g, t } = await pair()
      await t.store.put(new Key('/idle/a'), enc('one'))
      await g.waitFor('/idle/a', 'one')
      await new Promise(resolve => setTimeout(resolve, 11_000))
      await t.store.put(new Key('/idle/b'), enc('two'))
      await g.waitFor('/idle/b', 'two', 40_000)
    })

    it('single puts, overwrites and deletes', async () => {
      const { g, t } = await pair()
      await t.store.put(new Key('/t/a'), enc('one'))
      await t.store.put(new Key('/t/b'), enc('two'))
      // a replica merges a new head before the nodes under it: wait for each key
      await g.waitFor('/t/a', 'one')
      await g.waitFor('/t/b', 'two')
      expect(await g.list('/t/')).to.deep.equal([['/t/a', hex('one')], ['/t/b', hex('two')]])

      await t.store.put(new Key('/t/a'), enc('one, again'))
      await t.store.delete(new Key('/t/b'))
      await g.waitFor('/t/a', 'one, again')
      await g.waitFor('/t/b', null)
      expect(await g.list('/t/')).to.deep.equal([['/t/a', hex('one, again')]])

      const bytes = Uint8Array.from({ length: 256 }, (_, i) => 255 - i)
      await t.store.put(new Key('/t/bin'), bytes)
      await g.waitFor('/t/bin', bytes)
      expect(await g.list('/t/bin')).to.deep.equal([['/t/bin', hex(bytes)]])
      await converged(t, g, '/t/')
      const heads = await sameHeads(t, g)
      expect(heads).to.have.length(1)
      expect((await g.heads())[0].height).to.equal(5)
    })

    it('a batch of 1,000 puts, then one of 500 overwrites and 500 deletes', async () => {
      const { g, t } = await pair()
      let batch = t.store.batch()
      for (let i = 0; i < 1000; i++) batch.put(new Key(`/tb/${i}`), enc(`first-${i}`))
      await batch.commit()
      expect(t.store.heads()).to.have.length(1).and.nested.property('[0].height', 1)
      await g.waitCount('/tb/', 1000)

      batch = t.store.batch()
      for (let i = 0; i < 1000; i++) {
        if (i < 500) batch.put(new Key(`/tb/${i}`), enc(`second-${i}`))
        else batch.delete(new Key(`/tb/${i}`))
      }
      await batch.commit()
      await g.waitCount('/tb/', 500)
      const entries = await converged(t, g, '/tb/')
      expect(entries).to.have.length(500)
      expect(entries.every(([k, v]) => dec(Buffer.from(v, 'hex')) === `second-${k.slice(4)}`)).to.equal(true)
      await sameHeads(t, g)
      expect((await g.heads())[0].height).to.equal(2)
    })
  })

  describe('mixed networks', () => {
    it('a TS replica is the only bridge between two Go replicas', async () => {
      const [a, b, t] = await Promise.all([go({ name: 'go A' }), go({ name: 'go B' }), ts()])
      await Promise.all([link(t, a), link(t, b)])
      expect(await a.peers()).to.deep.equal([t.peerId])
      // A's head reaches B through TS's gossipsub; B fetches A's block from TS
      await a.put('/m/a', 'from A')
      await b.waitFor('/m/a', 'from A')
      await b.put('/m/b', 'from B')
      await a.waitFor('/m/b', 'from B')
      await t.store.put(new Key('/m/t'), enc('from TS'))
      const want = [['/m/a', hex('from A')], ['/m/b', hex('from B')], ['/m/t', hex('from TS')]]
      expect(await converged(t, a, '/m/')).to.deep.equal(want)
      expect(await converged(t, b, '/m/')).to.deep.equal(want)
      await sameHeads(t, a)
      await sameHeads(t, b)
    })
  })

  describe('concurrent writes to the same key', () => {
    it('at equal priority the byte-wise greatest value wins on both sides', async () => {
      const [g, t] = await Promise.all([go(), ts()])
      // partitioned: each side writes one node at height 1 before they meet
      await g.batch([{ op: 'put', key: '/c/k', value: 'apple' }, { op: 'put', key: '/c/j', value: 'zulu' }])
      const batch = t.store.batch()
      batch.put(new Key('/c/k'), enc('banana'))
      batch.put(new Key('/c/j'), enc('yak'))
      await batch.commit()
      await link(t, g)
      expect(await converged(t, g, '/c/')).to.deep.equal([['/c/j', hex('zulu')], ['/c/k', hex('banana')]])
      expect(await sameHeads(t, g)).to.have.length(2)
    })

    it('a higher priority wins over a greater value', async () => {
      const [g, t] = await Promise.all([go(), ts()])
      await g.put('/p/m', 'zzz') // height 1
      await g.put('/p/f1', 'x') // height 2
      await g.put('/p/k', 'a') // height 3
      await t.store.put(new Key('/p/k'), enc('zzz')) // height 1
      await t.store.put(new Key('/p/f2'), enc('x')) // height 2
      await t.store.put(new Key('/p/m'), enc('a')) // height 3
      await link(t, g)
      const entries = await converged(t, g, '/p/')
      expect(entries).to.deep.include.members([['/p/k', hex('a')], ['/p/m', hex('a')]])
      expect(entries).to.have.length(4)
    })

    it('simultaneous writes on linked replicas converge to one of the last writes', async () => {
      const { g, t } = await pair()
      for (let i = 0; i < 10; i++) {
        await Promise.all([g.put('/s/k', `go-${i}`), t.store.put(new Key('/s/k'), enc(`ts-${i}`))])
      }
      const [[, value]] = await converged(t, g, '/s/')
      expect(['go-9', 'ts-9']).to.include(dec(Buffer.from(value, 'hex')))
      await sameHeads(t, g)
    })
  })

  describe('empty values', () => {
    it('a freshly written empty value is present with an empty value on both sides', async () => {
      const { g, t } = await pair()
      await g.put('/e/go', '')
      await t.store.put(new Key('/e/ts'), new Uint8Array(0))
      expect(await converged(t, g, '/e/')).to.deep.equal([['/e/go', ''], ['/e/ts', '']])
    })

    it('when a delete leaves an empty value as the best live element, Go drops the key and TS keeps it empty (the documented difference)', async () => {
      const [g, t] = await Promise.all([go(), ts()])
      // partitioned: Go writes "" at height 1; TS writes "x" at height 1, then deletes it at height 2
      await g.put('/e/k', '')
      await t.store.put(new Key('/e/k'), enc('x'))
      await t.store.delete(new Key('/e/k'))
      await link(t, g)
      await sameHeads(t, g)
      // TS: Go's "" element is live, so the key is present and empty
      await tsWaitFor(t, '/e/k', '')
      // Go: its findBestValue reads the empty best element as no value
      await g.waitFor('/e/k', null)
      expect(await tsList(t.store, '/e/')).to.deep.equal([['/e/k', '']])
      expect(await g.list('/e/')).to.deep.equal([])
    })
  })

  describe('late joiners catch up on a DAG of 1,000 nodes', () => {
    it('a Go replica catches up on a TS DAG', async () => {
      const t = await ts()
      for (let i = 0; i < 1000; i++) await t.store.put(new Key(`/late/${i}`), enc(`ts-${i}`))
      expect(t.store.heads()[0].height).to.equal(1000)
      const g = await go()
      await link(t, g)
      await g.waitCount('/late/', 1000, 90_000)
      await converged(t, g, '/late/')
      const [head] = await g.heads()
      expect(head).to.deep.equal({ cid: tsHeadCids(t)[0], height: 1000, dagName: '' })
    })

    it('a TS replica catches up on a Go DAG', async () => {
      const g = await go()
      await g.bulk('/late/', 1000, 1, 'go-')
      const [head] = await g.heads()
      expect(head.height).to.equal(1000)
      const t = await ts()
      await link(t, g)
      await tsWaitCount(t, '/late/', 1000, 90_000)
      await converged(t, g, '/late/')
      expect(tsHeads(t)).to.deep.equal([head])
    })
  })

  describe('the same operations on fresh stores give the same DAG', () => {
    it('puts, overwrites, deletes and batches yield identical head CIDs and blocks', async () => {
      // leveldb: go-ds-crdt lists a key's elements in datastore order when it
      // builds tombstones, which only a sorted datastore makes deterministic
      const [g, t] = await Promise.all([go({ dataDir: await tempDir(), topic: 'interop-solo-go' }), ts({ topic: 'interop-solo-ts' })])
      const steps: Array<{ name: string, go(): Promise<void>, ts(): Promise<void> }> = [
        { name: 'put /hello', go: async () => g.put('/hello', 'world'), ts: async () => t.store.put(new Key('/hello'), enc('world')).then(() => {}) },
        { name: 'put /a', go: async () => g.put('/a', '1'), ts: async () => t.store.put(new Key('/a'), enc('1')).then(() => {}) },
        { name: 'overwrite /a', go: async () => g.put('/a', '2'), ts: async () => t.store.put(new Key('/a'), enc('2')).then(() => {}) },
        { name: 'delete /a (two tombstones)', go: async () => g.delete('/a'), ts: async () => t.store.delete(new Key('/a')) },
        {
          name: 'batch of distinct keys',
          go: async () => g.batch([{ op: 'put', key: '/b', value: 'x' }, { op: 'put', key: '/d', value: 'z' }, { op: 'put', key: '/c', value: 'y' }]),
          ts: async () => {
            const b = t.store.batch()
            b.put(new Key('/b'), enc('x'))
            b.put(new Key('/d'), enc('z'))
            b.put(new Key('/c'), enc('y'))
            await b.commit()
          }
        },
        {
          name: 'batch of puts and a delete',
          go: async () => g.batch([{ op: 'put', key: '/e', value: 'e' }, { op: 'delete', key: '/hello' }, { op: 'put', key: '/f', value: Uint8Array.of(0, 255) }]),
          ts: async () => {
            const b = t.store.batch()
            b.put(new Key('/e'), enc('e'))
            b.delete(new Key('/hello'))
            b.put(new Key('/f'), Uint8Array.of(0, 255))
            await b.commit()
          }
        },
        { name: 'delete /b', go: async () => g.delete('/b'), ts: async () => t.store.delete(new Key('/b')) }
      ]
      for (const [i, step] of steps.entries()) {
        await step.go()
        await step.ts()
        const goHeads = await g.heads()
        expect(goHeads, step.name).to.have.length(1)
        expect(tsHeads(t), step.name).to.deep.equal(goHeads)
        expect(goHeads[0].height, step.name).to.equal(i + 1)
        expect(await tsBlockHex(t, goHeads[0].cid), step.name).to.equal(await g.block(goHeads[0].cid))
        if (i === 0) {
          expect(goHeads[0].cid).to.equal(HELLO_CID)
          expect(await g.block(HELLO_CID)).to.equal(HELLO_BLOCK)
        }
      }
      expect(await tsList(t.store)).to.deep.equal(await g.list())
      expect(await tsList(t.store)).to.deep.equal([['/c', hex('y')], ['/d', hex('z')], ['/e', hex('e')], ['/f', '00ff']])
    })
  })

  describe('go-ds-crdt issue #238: put, put, delete on one side, put on the other', () => {
    for (const r0 of ['Go', 'TS'] as const) {
      it(`converges with put, put, delete on ${r0} and put on ${r0 === 'Go' ? 'TS' : 'Go'}`, async () => {
        const [g, t] = await Promise.all([go(), ts()])
        const tsPut = async (v: string): Promise<void> => { await t.store.put(new Key('/k1'), enc(v)) }
        if (r0 === 'Go') {
          await g.put('/k1', 'r0-1')
          await g.put('/k1', 'r0-2')
          await g.delete('/k1')
          await tsPut('r1-1')
        } else {
          await tsPut('r0-1')
          await tsPut('r0-2')
          await t.store.delete(new Key('/k1'))
          await g.put('/k1', 'r1-1')
        }
        await link(t, g)
        // r0's delete only tombstones the elements r0 had seen: r1's put survives
        expect(await converged(t, g, '/k1')).to.deep.equal([['/k1', hex('r1-1')]])
        expect(await sameHeads(t, g)).to.have.length(2)
        expect(await g.get('/k1')).to.equal('r1-1')
        expect(await t.store.get(new Key('/k1'))).to.deep.equal(enc('r1-1'))
      })
    }
  })

  describe('named DAGs (go-ds-crdt v0.6.8 has none)', () => {
    it('the Go replica refuses to write one', async () => {
      const g = await go()
      const reply = await g.send({ cmd: 'put', key: '/n', value: hex('v'), dagName: 'tenant' })
      expect(reply).to.have.property('ok', false)
      expect(reply.error).to.match(/named DAGs .* not supported by go-ds-crdt v0.6.8/)
      await expect(g.command({ cmd: 'purge', dagName: 'tenant' })).to.eventually.be.rejected.with.property('name', GoCommandError.name)
    })

    it('TS named-DAG writes reach a Go replica as values and both sides agree on every key', async () => {
      const { g, t } = await pair()
      await t.store.put(new Key('/n/a'), enc('tenant-a'), { dagName: 'tenant' })
      await t.store.put(new Key('/n/b'), enc('tenant-b'), { dagName: 'tenant' })
      await t.store.put(new Key('/n/c'), enc('default-c'))
      const batch = t.store.batch({ dagName: 'other/app' })
      batch.put(new Key('/n/d'), enc('other-d'))
      batch.put(new Key('/n/e'), enc('other-e'))
      await batch.commit()
      await g.waitCount('/n/', 5)
      await g.put('/n/f', 'go-f')
      await t.store.delete(new Key('/n/b'), { dagName: 'tenant' })
      await t.store.put(new Key('/n/a'), enc('tenant-a2'), { dagName: 'tenant' })
      await g.waitFor('/n/b', null)
      await g.waitFor('/n/a', 'tenant-a2')
      expect(await converged(t, g, '/n/')).to.deep.equal([
        ['/n/a', hex('tenant-a2')], ['/n/c', hex('default-c')], ['/n/d', hex('other-d')], ['/n/e', hex('other-e')], ['/n/f', hex('go-f')]
      ])
      // TS keeps its named DAGs apart; the Go replica folds them into its single DAG
      // TS keeps one set of heads per DAG; the Go replica folds every DAG
      // into its single one (its node for /n/f links the named heads it had),
      // so its heads are a subset of TS's
      expect(t.store.heads('tenant')).to.have.length(1)
      expect(t.store.heads('other/app')).to.have.length(1)
      expect(tsHeadCids(t)).to.include.members((await g.heads()).map(h => h.cid))
    })
  })
})
