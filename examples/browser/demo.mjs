/**
 * `npm run demo:browser`: starts a Node replica listening on WebSockets at
 * 127.0.0.1 and serves the example page (index.html + app.mjs bundled for
 * browsers) from http://127.0.0.1:<port>, printing the URL. Open it in a
 * browser: the page's replica (IndexedDB) dials the Node replica; writes
 * made on either side show up on the other. Lines typed here are
 * `put <key> <value>` / `delete <key>` on the Node replica. Ctrl-C stops.
 *
 * `startDemo()` is what the screenshot test uses. Everything listens on
 * 127.0.0.1 only.
 */

import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../../dist/src/helia/index.js'
import { createReplicaNode } from '../../dist/src/node/index.js'

export const DEFAULT_TOPIC = 'datastore-crdt-browser-example'

/**
 * Starts the Node replica and the page server; `stop()` stops both
 *
 * @param root0
 * @param root0.port
 * @param root0.topic
 */
export async function startDemo ({ port = 0, topic = DEFAULT_TOPIC } = {}) {
  const node = await createReplicaNode({ listen: ['/ip4/127.0.0.1/tcp/0/ws'] })
  const store = await createHeliaCRDT(node, { topic, rebroadcastInterval: 1000 })
  const addr = node.libp2p.getMultiaddrs().map(String).find(a => a.includes('/ws/'))
  const out = await build({
    entryPoints: [fileURLToPath(new URL('./app.mjs', import.meta.url))],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent'
  })
  const files = {
    '/': { type: 'text/html', body: await readFile(new URL('./index.html', import.meta.url)) },
    '/app.js': { type: 'text/javascript', body: out.outputFiles[0].contents },
    '/config.json': { type: 'application/json', body: JSON.stringify({ addr, topic }) }
  }
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://127.0.0.1').pathname]
    if (file === undefined) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-store' }).end(file.body)
  })
  await new Promise(resolve => server.listen(port, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    addr,
    store,
    stop: async () => {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
      await store.stop()
      await node.stop()
    }
  }
}

async function cli () {
  const demo = await startDemo({ port: Number(process.env.PORT ?? 0) })
  console.log(`Node replica listening on ${demo.addr}`)
  console.log(`open ${demo.url}`)
  console.log('type: put <key> <value> | delete <key>   (Ctrl-C stops)')
  demo.store.addEventListener('put', e => { console.log(`put ${e.detail.key} = ${new TextDecoder().decode(e.detail.value)}`) })
  demo.store.addEventListener('delete', e => { console.log(`delete ${e.detail.key}`) })
  const rl = createInterface({ input: process.stdin })
  rl.on('line', line => {
    const [cmd, key, ...rest] = line.trim().split(/\s+/)
    const done = cmd === 'put' && key != null
      ? demo.store.put(new Key(key), new TextEncoder().encode(rest.join(' ')))
      : cmd === 'delete' && key != null ? demo.store.delete(new Key(key)) : undefined
    if (done === undefined) console.log('put <key> <value> | delete <key>')
    else done.catch(err => { console.error(err.message) })
  })
  const stop = async () => { rl.close(); await demo.stop(); process.exit(0) }
  process.once('SIGINT', () => { void stop() })
  rl.once('close', () => { void stop() })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await cli()
