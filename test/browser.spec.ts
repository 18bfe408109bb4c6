/**
 * Runs the browser suite (test/browser/index.ts) in a real headless
 * Chromium from npm alone, and fails when any test in the page fails.
 * Each page test shows up here as one Node test of the same title, so the
 * spec reporter lists them all. Also proves that the runner itself reports
 * a failing page test as failed (a self-check bundle with a deliberate
 * failure).
 *
 * Prints `NOT RUN: <why>` and skips only where the bundled binary cannot run
 * at all (anything but x64 Linux).
 */

import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { launchChromium } from './browser/chromium.js'
import { runInBrowser } from './browser/harness.js'
import type { BrowserRun } from './browser/harness.js'
import type { Browser } from 'playwright-core'

const entry = (name: string): string => fileURLToPath(new URL(`./browser/${name}`, import.meta.url))

/** How many tests the browser suite has today (13 OR-set, 7 batch, 2 event, 5 wire, 42 interface-datastore): a spec that silently drops out fails the run */
const MIN_BROWSER_TESTS = 69

describe('in headless Chromium', function () {
  this.timeout(180_000)
  let browser: Browser | undefined
  let suite: BrowserRun | undefined

  before(async function () {
    const launched = await launchChromium()
    if ('notRun' in launched) {
      console.log(`      NOT RUN: ${launched.notRun}`)
      this.skip()
    }
    browser = launched.browser
    suite = await runInBrowser(browser, entry('index.js'), { timeout: 120_000 })
    for (const r of suite.results) {
      console.log(`      ${r.state === 'passed' ? '✔' : '✖'} [chromium ${launched.version}] ${r.title}`)
    }
  })

  after(async () => {
    await browser?.close()
  })

  it('the runner reports a failing page test as failed, and a passing one as passed', async () => {
    if (browser === undefined) throw new Error('no browser')
    const run = await runInBrowser(browser, entry('fixtures/self-check.js'), { timeout: 30_000 })
    expect(run.timedOut).to.equal(false)
    expect(run.pageErrors).to.deep.equal([])
    expect(run.results.map(r => [r.title, r.state])).to.deep.equal([
      ['runner self-check passes in the page', 'passed'],
      ['runner self-check fails in the page', 'failed']
    ])
    expect(run.results[1].error).to.include('deliberate failure')
  })

  it('the browser suite loads and runs to its end', () => {
    expect(suite?.pageErrors).to.deep.equal([])
    expect(suite?.timedOut).to.equal(false)
    expect(suite?.results.length).to.be.at.least(MIN_BROWSER_TESTS)
  })

  it('every browser test passes', () => {
    const failed = (suite?.results ?? []).filter(r => r.state === 'failed')
    expect(failed.map(f => `${f.title}\n${f.error ?? ''}`).join('\n\n'), 'failed in the page').to.equal('')
  })
})
