/**
 * Runs a bundle of mocha specs inside a real page and reports every result
 * back to Node, so a failing browser test fails the Node test that ran it.
 *
 * How: esbuild bundles the entry for `platform: 'browser'` (a `node:` import
 * fails the bundle: there are no shims), a tiny HTTP server on 127.0.0.1
 * serves mocha's browser build, the bundle and a page that runs them (a real
 * origin, which IndexedDB needs), and a reporter in the page hands each
 * result to Node through `page.exposeFunction`.
 *
 * Invariants: the server listens on 127.0.0.1 only and serves only the
 * three files it was given; every wait is bounded by `timeout`; each run
 * gets a fresh browser context (empty IndexedDB), closed before returning.
 */

import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import type { AddressInfo } from 'node:net'
import type { Browser } from 'playwright-core'

/** One test's result as the page reported it */
export interface BrowserTestResult {
  title: string
  state: 'passed' | 'failed'
  error?: string
}

export interface BrowserRun {
  results: BrowserTestResult[]
  /** Errors thrown in the page outside any test (a bundle that fails to load) */
  pageErrors: string[]
  /** Set when the run did not reach mocha's end within the timeout */
  timedOut: boolean
  bundleBytes: number
}

export interface RunOptions {
  /** Bound on the whole run in the page, in ms */
  timeout?: number
  /** Per-test mocha timeout in the page, in ms */
  testTimeout?: number
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>datastore-crdt browser specs</title></head>
<body><div id="mocha"></div>
<script src="/mocha.js"></script>
<script>
  mocha.setup({ ui: 'bdd', timeout: Number(new URLSearchParams(location.search).get('timeout')), reporter: function (runner) {
    const report = (r) => { window.__pending.push(window.__report(r)) }
    window.__pending = []
    runner.on('pass', (t) => report({ title: t.fullTitle(), state: 'passed' }))
    runner.on('fail', (t, err) => report({ title: t.fullTitle(), state: 'failed', error: String(err && (err.stack || err.message) || err) }))
    runner.on('end', () => { Promise.all(window.__pending).then(() => window.__done()) })
  } })
</script>
<script type="module" src="/bundle.js"></script>
<script type="module">mocha.run()</script>
</body></html>`

/** Bundles `entry` (an ES module) for browsers; fails on any Node built-in */
export async function bundleForBrowser (entry: string, minify = false): Promise<Uint8Array> {
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify,
    write: false,
    logLevel: 'silent'
  })
  return out.outputFiles[0].contents
}

/** Serves exactly `files` (path → body) on 127.0.0.1 at a free port */
export async function serve (files: Record<string, { type: string, body: Uint8Array | string }>): Promise<{ url: string, close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://127.0.0.1').pathname]
    if (file === undefined) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
}

/**
 * Bundles `entry`, opens it in a fresh context of `browser` and runs its
 * mocha specs, returning every result.
 */
export async function runInBrowser (browser: Browser, entry: string, options: RunOptions = {}): Promise<BrowserRun> {
  const timeout = options.timeout ?? 60_000
  const bundle = await bundleForBrowser(entry)
  const mochaJs = await readFile(fileURLToPath(import.meta.resolve('mocha/mocha.js')))
  const server = await serve({
    '/': { type: 'text/html', body: PAGE },
    '/mocha.js': { type: 'text/javascript', body: mochaJs },
    '/bundle.js': { type: 'text/javascript', body: bundle }
  })
  const context = await browser.newContext()
  const results: BrowserTestResult[] = []
  const pageErrors: string[] = []
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const page = await context.newPage()
    page.on('pageerror', err => { pageErrors.push(err.stack ?? err.message) })
    const finished = Promise.withResolvers<boolean>()
    await page.exposeFunction('__report', (r: BrowserTestResult) => { results.push(r) })
    await page.exposeFunction('__done', () => { finished.resolve(true) })
    timer = setTimeout(() => { finished.resolve(false) }, timeout)
    await page.goto(`${server.url}/?timeout=${options.testTimeout ?? 20_000}`)
    const done = await finished.promise
    return { results, pageErrors, timedOut: !done, bundleBytes: bundle.byteLength }
  } finally {
    clearTimeout(timer)
    await context.close()
    await server.close()
  }
}
