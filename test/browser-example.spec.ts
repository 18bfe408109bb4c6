/**
 * Screenshot test of the example app (examples/browser/): starts the demo
 * (a Node replica on WebSockets at 127.0.0.1 and the page server), opens
 * the page in headless Chromium, writes a key on the Node replica and
 * checks that the page lists it, that the sync state shows the connection,
 * and that a put made through the page's form reaches the Node replica.
 * Saves a screenshot of the page with the key shown (to the temp dir) and
 * checks it is a real, non-trivial PNG, so a broken UI fails the suite.
 *
 * Every wait is bounded (WAIT_MS). Prints `NOT RUN: <why>` and skips only
 * where the bundled Chromium cannot run at all (anything but x64 Linux).
 */

import { rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'aegir/chai'
import { Key } from 'interface-datastore'
import { launchChromium } from './browser/chromium.js'
import type { Browser } from 'playwright-core'

const WAIT_MS = 20_000
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

interface Demo {
  url: string
  store: { put(k: Key, v: Uint8Array): Promise<void>, has(k: Key): Promise<boolean>, get(k: Key): Promise<Uint8Array> }
  stop(): Promise<void>
}

describe('the browser example app', function () {
  this.timeout(120_000)
  let browser: Browser | undefined
  let demo: Demo | undefined
  const shot = join(tmpdir(), `datastore-crdt-example-${process.pid}.png`)

  before(async function () {
    const launched = await launchChromium()
    if ('notRun' in launched) {
      console.log(`      NOT RUN: ${launched.notRun}`)
      this.skip()
    }
    browser = launched.browser
  })

  after(async () => {
    await demo?.stop()
    await browser?.close()
    await rm(shot, { force: true })
  })

  it('shows a key written on the Node replica, and its form writes to it', async () => {
    if (browser === undefined) throw new Error('no browser')
    const { startDemo } = await import(new URL('../../examples/browser/demo.mjs', import.meta.url).href)
    demo = await startDemo({ topic: `example-${process.pid}` }) as Demo
    const context = await browser.newContext({ viewport: { width: 800, height: 600 } })
    try {
      const page = await context.newPage()
      const errors: string[] = []
      page.on('pageerror', err => { errors.push(err.message) })
      await page.goto(demo.url)
      await page.waitForSelector('body[data-ready=true]', { timeout: WAIT_MS })
      expect(await page.textContent('#status')).to.match(/^connected to 1 peer/)

      await demo.store.put(new Key('/from-node'), new TextEncoder().encode('shown in the page'))
      const item = await page.waitForSelector('li[data-key="/from-node"]', { timeout: WAIT_MS })
      expect(await item.textContent()).to.equal('/from-node = shown in the page')

      const png = await page.screenshot({ fullPage: true })
      await writeFile(shot, png)
      expect([...png.subarray(0, 8)]).to.deep.equal(PNG_MAGIC)
      // an 800×600 page with text, a form and colours compresses to ~15 KB; a blank page to ~2.7 KB
      expect(png.byteLength).to.be.greaterThan(10_000)

      await page.fill('#key', '/from-page')
      await page.fill('#value', 'typed in the form')
      await page.click('#put')
      const deadline = Date.now() + WAIT_MS
      while (!await demo.store.has(new Key('/from-page')) && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      expect(new TextDecoder().decode(await demo.store.get(new Key('/from-page')))).to.equal('typed in the form')
      await page.waitForSelector('li[data-key="/from-page"]', { timeout: WAIT_MS })
      expect(errors).to.deep.equal([])
    } finally {
      await context.close()
    }
  })
})
