/**
 * Node↔browser replication in a real headless Chromium: a Node replica
 * (Helia, LevelDB-less memory stores, listening on WebSockets at
 * 127.0.0.1) and a page replica (test/browser/replica-page.ts: Helia with
 * WebSockets, gossipsub and bitswap, state and blocks in IndexedDB) that
 * dials it. Writes cross both ways; after a page reload the page replica
 * still has its state from IndexedDB and catches up on a write it missed.
 *
 * Every wait is bounded (WAIT_MS). Prints `NOT RUN: <why>` and skips only
 * where the bundled Chromium cannot run at all (anything but x64 Linux).
 */

import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { launchChromium } from './browser/chromium.js'
import { bundleForBrowser, serve } from './browser/harness.js'
import type { PageReplica } from './browser/replica-page.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { Browser, Page } from 'playwright-core'

const TOPIC = 'browser-replication'
const WAIT_MS = 20_000

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>page replica</title></head>
<body><script type="module" src="/bundle.js"></script></body></html>`

async function nodeHas (store: HeliaCRDTDatastore, key: string, value: string): Promise<boolean> {
  const deadline = Date.now() + WAIT_MS
  while (Date.now() < deadline) {
    if (await store.has(new Key(key)) && new TextDecoder().decode(await store.get(new Key(key))) === value) return true
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return false
}

/** Runs one `PageReplica` method in the page */
async function call<M extends keyof PageReplica> (page: Page, method: M, ...args: Parameters<PageReplica[M]>): Promise<Awaited<ReturnType<PageReplica[M]>>> {
  return page.evaluate(async ([m, a]) => {
    const r = (globalThis as any).replica
    return r[m](...a)
  }, [method, args] as const) as any
}

describe('Node↔browser replication over WebSockets', function () {
  this.timeout(120_000)
  let browser: Browser | undefined
  let node: ReplicaNode | undefined
  let store: HeliaCRDTDatastore | undefined
  let server: { url: string, close(): Promise<void> } | undefined

  before(async function () {
    const launched = await launchChromium()
    if ('notRun' in launched) {
      console.log(`      NOT RUN: ${launched.notRun}`)
      this.skip()
    }
    browser = launched.browser
    const bundle = await bundleForBrowser(fileURLToPath(new URL('./browser/replica-page.js', import.meta.url)))
    server = await serve({ '/': { type: 'text/html', body: PAGE }, '/bundle.js': { type: 'text/javascript', body: bundle } })
  })

  after(async () => {
    await store?.stop()
    await node?.stop()
    await browser?.close()
    await server?.close()
  })

  it('writes cross both ways, and a reloaded page keeps its state and catches up', async () => {
    if (browser === undefined || server === undefined) throw new Error('not set up')
    node = await createReplicaNode({ listen: ['/ip4/127.0.0.1/tcp/0/ws'] })
    store = await createHeliaCRDT(node, { topic: TOPIC, rebroadcastInterval: 250, repairInterval: 0 })
    const ws = node.libp2p.getMultiaddrs().map(String).find(a => a.includes('/ws/'))
    expect(ws, 'the Node replica listens on WebSockets').to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\//)

    const context = await browser.newContext()
    try {
      const page = await context.newPage()
      const errors: string[] = []
      page.on('pageerror', err => { errors.push(err.message) })
      await page.goto(`${server.url}/`)
      await page.waitForFunction(() => (globalThis as any).replica !== undefined, undefined, { timeout: WAIT_MS })

      await call(page, 'start', 'page-replica', TOPIC)
      await call(page, 'dial', ws as string)
      await store.put(new Key('/from-node'), new TextEncoder().encode('hello browser'))
      expect(await call(page, 'waitFor', '/from-node', 'hello browser', WAIT_MS), 'Node → browser').to.equal(true)
      await call(page, 'put', '/from-browser', 'hello node')
      expect(await nodeHas(store, '/from-browser', 'hello node'), 'browser → Node').to.equal(true)

      // the tab goes away; the Node replica writes while it is gone
      await call(page, 'stop')
      await store.put(new Key('/while-away'), new TextEncoder().encode('missed'))
      await page.reload()
      await page.waitForFunction(() => (globalThis as any).replica !== undefined, undefined, { timeout: WAIT_MS })
      // before it connects to anyone, the reopened replica has its state from IndexedDB
      await call(page, 'start', 'page-replica', TOPIC)
      expect(await call(page, 'get', '/from-browser'), 'own write kept in IndexedDB').to.equal('hello node')
      expect(await call(page, 'get', '/from-node'), 'received write kept in IndexedDB').to.equal('hello browser')
      expect(await call(page, 'get', '/while-away'), 'not yet caught up').to.equal(null)
      await call(page, 'dial', ws as string)
      expect(await call(page, 'waitFor', '/while-away', 'missed', WAIT_MS), 'catches up after reload').to.equal(true)
      await call(page, 'stop')
      expect(errors).to.deep.equal([])
    } finally {
      await context.close()
    }
  })
})
