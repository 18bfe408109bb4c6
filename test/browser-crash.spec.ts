/**
 * A browser replica that goes away in the middle of a run of writes, in a
 * real headless Chromium on a browser profile kept in a temp dir (IndexedDB
 * persists there, as in a user's browser):
 *
 * 1. the tab is closed while the page is writing; a new tab on the same
 *    origin reopens the store;
 * 2. the whole browser process is killed (SIGKILL) while the page is
 *    writing; a new browser on the same profile reopens the store.
 *
 * Each time the reopened store has detected the unclean stop (it is dirty),
 * a repair clears it, every write the page acknowledged before it went
 * away is there with its value, the store takes new writes, and it then
 * syncs both ways with a Node replica listening on WebSockets at 127.0.0.1.
 *
 * A write counts as acknowledged once its `put` resolved in the page and
 * the page told Node so (test/browser/replica-page.ts `writeMany`). Every
 * wait is bounded (WAIT_MS). Prints `NOT RUN: <why>` and skips only where
 * the bundled Chromium cannot run at all (anything but x64 Linux).
 */

import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../src/helia/index.js'
import { createReplicaNode } from '../src/node/index.js'
import { cannotRun, launchPersistentChromium } from './browser/chromium.js'
import { bundleForBrowser, serve } from './browser/harness.js'
import { tempDir } from './fixtures/stores.js'
import type { PageReplica } from './browser/replica-page.js'
import type { HeliaCRDTDatastore } from '../src/helia/index.js'
import type { ReplicaNode } from '../src/node/index.js'
import type { BrowserContext, Page } from 'playwright-core'

const TOPIC = 'browser-crash'
const WAIT_MS = 20_000
/** More writes than can finish before the page goes away */
const WRITES = 100_000
/** Writes acknowledged before the page is made to go away */
const ACKED_BEFORE_CLOSE = 15

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>page replica</title></head>
<body><script type="module" src="/bundle.js"></script></body></html>`

/** Runs one `PageReplica` method in the page */
async function call<M extends keyof PageReplica> (page: Page, method: M, ...args: Parameters<PageReplica[M]>): Promise<Awaited<ReturnType<PageReplica[M]>>> {
  return page.evaluate(async ([m, a]) => {
    const r = (globalThis as any).replica
    return r[m](...a)
  }, [method, args] as const) as any
}

/**
 * The pid of the browser's main process on `profileDir`: the one process
 * whose command line names that profile and is not a helper (`--type=`)
 */
async function browserPid (profileDir: string): Promise<number> {
  const found: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const args = await readFile(`/proc/${entry}/cmdline`, 'utf8').then(t => t.split('\0'), () => [] as string[])
    if (args.includes(`--user-data-dir=${profileDir}`) && !args.some(a => a.startsWith('--type='))) found.push(Number(entry))
  }
  if (found.length !== 1) throw new Error(`expected one browser process on ${profileDir}, found ${found.length}`)
  return found[0]
}

async function until (test: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS
  while (!await test()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

describe('a browser replica closed mid-write', function () {
  this.timeout(180_000)
  let profile: Awaited<ReturnType<typeof tempDir>> | undefined
  let server: { url: string, close(): Promise<void> } | undefined
  let node: ReplicaNode | undefined
  let store: HeliaCRDTDatastore | undefined
  let ws = ''
  const contexts = new Set<BrowserContext>()

  before(async function () {
    const reason = cannotRun()
    if (reason !== undefined) {
      console.log(`      NOT RUN: ${reason}`)
      this.skip()
    }
    profile = await tempDir('crdt-browser-profile')
    const bundle = await bundleForBrowser(fileURLToPath(new URL('./browser/replica-page.js', import.meta.url)))
    server = await serve({ '/': { type: 'text/html', body: PAGE }, '/bundle.js': { type: 'text/javascript', body: bundle } })
    node = await createReplicaNode({ listen: ['/ip4/127.0.0.1/tcp/0/ws'] })
    store = await createHeliaCRDT(node, { topic: TOPIC, rebroadcastInterval: 250, repairInterval: 0 })
    ws = node.libp2p.getMultiaddrs().map(String).find(a => a.includes('/ws/')) ?? ''
    expect(ws, 'the Node replica listens on WebSockets').to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\//)
  })

  after(async () => {
    for (const context of contexts) await context.close().catch(() => {})
    await store?.stop()
    await node?.stop()
    await server?.close()
    await profile?.remove()
  })

  /** A browser on the test's profile */
  async function launch (): Promise<BrowserContext> {
    if (profile === undefined) throw new Error('not set up')
    const launched = await launchPersistentChromium(profile.path)
    if ('notRun' in launched) throw new Error(launched.notRun)
    contexts.add(launched.context)
    launched.context.on('close', () => { contexts.delete(launched.context) })
    return launched.context
  }

  /** A page of the test's origin with the replica in it, not yet started */
  async function open (context: BrowserContext, errors: string[]): Promise<Page> {
    if (server === undefined) throw new Error('not set up')
    const page = await context.newPage()
    page.on('pageerror', err => { errors.push(err.message) })
    await page.goto(`${server.url}/`)
    await page.waitForFunction(() => (globalThis as any).replica !== undefined, undefined, { timeout: WAIT_MS })
    return page
  }

  /** Starts a run of writes under `prefix` that never finishes by itself; resolves once `ACKED_BEFORE_CLOSE` are acknowledged */
  async function writeUntilAcked (page: Page, prefix: string, acked: string[]): Promise<void> {
    await page.exposeFunction('__ack', (key: string) => { acked.push(key) })
    await page.evaluate(([p, n]) => { void (globalThis as any).replica.writeMany(p, n) }, [prefix, WRITES] as const)
    await until(() => acked.length >= ACKED_BEFORE_CLOSE, `${ACKED_BEFORE_CLOSE} acknowledged writes`)
  }

  /** What every reopened store must show, then sync both ways with the Node replica */
  async function checkReopened (page: Page, prefix: string, acked: string[]): Promise<void> {
    if (store === undefined) throw new Error('not set up')
    expect(await call(page, 'isDirty'), 'the unclean stop was detected').to.equal(true)
    await call(page, 'repair')
    expect(await call(page, 'isDirty'), 'repaired').to.equal(false)

    const kept = new Set(await call(page, 'keys', prefix))
    expect(acked.filter(k => !kept.has(k)), 'acknowledged writes missing after reopening').to.deep.equal([])
    expect(kept.size, 'the run of writes was cut short').to.be.below(WRITES)
    for (const key of acked) {
      expect(await call(page, 'get', key)).to.equal(`v${key.slice(prefix.length + 1)}`)
    }
    await call(page, 'put', `${prefix}-after`, 'written after reopening')

    await call(page, 'dial', ws)
    const nodeHasAll = async (): Promise<boolean> => {
      for (const key of [...acked, `${prefix}-after`]) {
        if (!await store!.has(new Key(key))) return false
      }
      return true
    }
    await until(nodeHasAll, 'the Node replica to hold every acknowledged write')
    expect(new TextDecoder().decode(await store.get(new Key(acked[acked.length - 1])))).to.equal(`v${acked[acked.length - 1].slice(prefix.length + 1)}`)
    await store.put(new Key(`${prefix}-from-node`), new TextEncoder().encode('to the reopened page'))
    expect(await call(page, 'waitFor', `${prefix}-from-node`, 'to the reopened page', WAIT_MS), 'Node → reopened page').to.equal(true)
  }

  it('closing the tab mid-write: a new tab reopens the store, repairs it, has every acknowledged write and syncs', async () => {
    const errors: string[] = []
    const context = await launch()
    try {
      const page = await open(context, errors)
      await call(page, 'start', 'tab-closed', TOPIC)
      const acked: string[] = []
      await writeUntilAcked(page, '/tab', acked)
      await page.close()
      const ackedAtClose = [...acked]

      const again = await open(context, errors)
      await call(again, 'start', 'tab-closed', TOPIC)
      await checkReopened(again, '/tab', ackedAtClose)
      await call(again, 'stop')
      expect(errors).to.deep.equal([])
    } finally {
      await context.close()
    }
  })

  it('killing the browser mid-write: a new browser on the same profile reopens the store, repairs it, has every acknowledged write and syncs', async () => {
    if (profile === undefined) throw new Error('not set up')
    const errors: string[] = []
    const first = await launch()
    const page = await open(first, errors)
    await call(page, 'start', 'browser-killed', TOPIC)
    const acked: string[] = []
    await writeUntilAcked(page, '/killed', acked)
    const pid = await browserPid(profile.path)
    const gone = new Promise<void>(resolve => first.on('close', () => { resolve() }))
    process.kill(pid, 'SIGKILL')
    await gone
    const ackedAtKill = [...acked]

    const second = await launch()
    try {
      const again = await open(second, errors)
      await call(again, 'start', 'browser-killed', TOPIC)
      await checkReopened(again, '/killed', ackedAtKill)
      await call(again, 'stop')
      expect(errors).to.deep.equal([])
    } finally {
      await second.close()
    }
  })
})
