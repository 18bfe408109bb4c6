/**
 * Browser bundle size: esbuild bundles the core (core.mjs: the store,
 * codecs and errors, without Helia, libp2p or LevelDB) for
 * `--platform=browser`, minified, and reports its size and gzipped size.
 * A `node:` import anywhere in the core fails the bundle, and so this row.
 * Also tries the package entry (dist/src/index.js) the same way and
 * reports whether it bundles (it cannot while it re-exports the Node-only
 * replica helper).
 *
 *   node benchmarks/browser-bundle/index.mjs [--out results.json]
 */

import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { gzipSync } from 'node:zlib'
import { build } from 'esbuild'
import { main, round } from '../lib/common.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))

/** Target from issue #18, in KB of minified JavaScript */
export const TARGET_KB = 250

async function bundle (entry) {
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent'
  })
  return out.outputFiles[0].contents
}

export async function run () {
  const core = await bundle(join(HERE, 'core.mjs'))
  const rows = [{
    name: 'browser bundle: core, minified',
    value: round(core.byteLength / 1024, 1),
    unit: 'KB',
    note: `esbuild --platform=browser --minify of the store, codecs and errors; ${round(gzipSync(core).byteLength / 1024, 1)} KB gzipped; target ≤ ${TARGET_KB} KB`
  }]
  try {
    const entry = await bundle(join(HERE, '..', '..', 'dist', 'src', 'index.js'))
    rows.push({ name: 'browser bundle: package entry, minified', value: round(entry.byteLength / 1024, 1), unit: 'KB', note: 'dist/src/index.js (the package entry `datastore-crdt`: the core without the adapters)' })
  } catch (err) {
    const first = err.errors?.[0]
    const why = first != null ? `${first.text} (${first.location?.file ?? '?'})` : String(err.message ?? err)
    rows.push({ name: 'browser bundle: package entry, minified', value: null, unit: 'KB', error: `does not bundle for browsers: ${why}` })
  }
  return rows
}

main(import.meta.url, run)
