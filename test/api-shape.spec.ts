/**
 * The shape of the public API: factories hand out interfaces, the
 * implementation classes stay private to the package, and the store's events
 * can be listened to but not dispatched by callers (compile-time and run-time
 * checks). A stopped store starts again.
 */

import { expect } from 'aegir/chai'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import * as helia from '../src/helia/index.js'
import * as core from '../src/index.js'
import { createCRDTDatastore } from '../src/index.js'
import * as node from '../src/node/index.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { CRDTDatastore, PutEventDetail } from '../src/index.js'

const enc = (s: string): Uint8Array => new TextEncoder().encode(s)

/**
 * Never called: type-checked only. Each line marked `@ts-expect-error` must
 * fail to compile, or the build fails ("unused @ts-expect-error")
 */
export function compileChecks (store: CRDTDatastore, heliaStore: HeliaCRDTDatastore): void {
  // @ts-expect-error callers cannot dispatch the store's events
  store.dispatchEvent(new CustomEvent('put', { detail: { key: new Key('/fake'), value: enc('x') } }))
  // @ts-expect-error nor through a typed dispatcher
  store.safeDispatchEvent('put', { detail: { key: new Key('/fake'), value: enc('x') } })
  // @ts-expect-error nor on the Helia store
  heliaStore.dispatchEvent(new Event('delete'))
  // @ts-expect-error only the store's own events can be listened to
  store.addEventListener('no-such-event', () => {})
  // a listener's event is typed by its name
  store.addEventListener('put', (evt) => { const detail: PutEventDetail = evt.detail; void detail })
}

/** Exports of an entry point that are classes of a store (have `synced` on their prototype) */
function storeClasses (entry: Record<string, unknown>): string[] {
  return Object.entries(entry)
    .filter(([, value]) => typeof value === 'function' && (value as { prototype?: Record<string, unknown> }).prototype?.synced != null)
    .map(([name]) => name)
}

describe('API shape', () => {
  it('no entry point exports a store class: stores come only from the factories', () => {
    for (const [name, entry] of [['datastore-crdt', core], ['datastore-crdt/helia', helia], ['datastore-crdt/node', node]] as const) {
      expect(storeClasses(entry), name).to.deep.equal([])
      expect(Object.keys(entry), name).to.not.include.members(['CRDTDatastore', 'DefaultCRDTDatastore', 'HeliaCRDTDatastore'])
    }
    expect(core.createCRDTDatastore).to.be.a('function')
    expect(helia.createHeliaCRDT).to.be.a('function')
  })

  it('the store returned has no dispatchEvent: a caller cannot fake a put', async () => {
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })
    try {
      expect('dispatchEvent' in store).to.equal(false)
      expect('safeDispatchEvent' in store).to.equal(false)
      expect((store as unknown as Record<string, unknown>).dispatchEvent).to.equal(undefined)
      expect(store).to.not.be.instanceOf(EventTarget)
    } finally {
      await store.stop()
    }
  })

  it('listeners hear the store\'s own events, and stop hearing them once removed', async () => {
    const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })
    try {
      const puts: string[] = []
      const deletes: string[] = []
      const onPut = (evt: CustomEvent<PutEventDetail>): void => { puts.push(`${evt.detail.key.toString()}=${new TextDecoder().decode(evt.detail.value)}`) }
      store.addEventListener('put', onPut)
      store.addEventListener('delete', { handleEvent: (evt) => { deletes.push(evt.detail.key.toString()) } })
      expect(store.listenerCount('put')).to.equal(1)
      await store.put(new Key('/a'), enc('1'))
      await store.delete(new Key('/a'))
      store.removeEventListener('put', onPut)
      expect(store.listenerCount('put')).to.equal(0)
      await store.put(new Key('/b'), enc('2'))
      expect(puts).to.deep.equal(['/a=1'])
      expect(deletes).to.deep.equal(['/a'])
    } finally {
      await store.stop()
    }
  })

  it('a stopped store starts again, keeping its data, its listeners and its ability to write', async () => {
    const datastore = new MemoryDatastore()
    const store = await createCRDTDatastore({ datastore, blockstore: new MemoryBlockstore() })
    const puts: string[] = []
    store.addEventListener('put', (evt) => { puts.push(evt.detail.key.toString()) })
    await store.put(new Key('/before'), enc('1'))
    await store.stop()
    await expect(store.put(new Key('/stopped'), enc('x'))).to.eventually.be.rejected.with.property('name', 'DatastoreStoppedError')
    await store.start()
    try {
      await store.put(new Key('/after'), enc('2'))
      expect(new TextDecoder().decode(await store.get(new Key('/before')))).to.equal('1')
      expect(await store.has(new Key('/stopped'))).to.equal(false)
      expect(puts).to.deep.equal(['/before', '/after'])
      expect(store.heads()).to.have.lengthOf(1)
      expect(store.heads()[0].height).to.equal(2)
    } finally {
      await store.stop()
    }
  })
})
