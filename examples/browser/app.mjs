/**
 * The example page's code: a browser replica of datastore-crdt (Helia with
 * WebSockets, gossipsub and bitswap; state and blocks in IndexedDB) that
 * dials the Node replica named in /config.json, shows the keys live, and
 * puts and deletes through a form. Bundled for browsers by demo.mjs.
 *
 * It dials only the address the demo server gives it (127.0.0.1); the
 * connection gater allows that loopback address, which libp2p's browser
 * defaults refuse as private.
 */

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { webSockets } from '@libp2p/websockets'
import { multiaddr } from '@multiformats/multiaddr'
import { IDBBlockstore } from 'blockstore-idb'
import { IDBDatastore } from 'datastore-idb'
import { createHeliaLight } from 'helia'
import { Key } from 'interface-datastore'
import { createHeliaCRDT } from '../../dist/src/helia/helia.js'

const $ = (id) => document.getElementById(id)
const enc = (s) => new TextEncoder().encode(s)
const dec = (b) => new TextDecoder().decode(b)

function setStatus (text, state) {
  $('status').textContent = text
  $('status').dataset.state = state
}

async function render (store) {
  const rows = []
  for await (const { key, value } of store.query({})) rows.push([key.toString(), dec(value)])
  rows.sort((a, b) => a[0] < b[0] ? -1 : 1)
  const list = $('keys')
  list.replaceChildren(...rows.map(([k, v]) => {
    const li = document.createElement('li')
    li.dataset.key = k
    const name = document.createElement('code')
    name.textContent = k
    li.append(name, ` = ${v}`)
    return li
  }))
  $('count').textContent = String(rows.length)
}

async function main () {
  const config = await (await fetch('/config.json')).json()
  setStatus('opening IndexedDB…', 'starting')
  const datastore = new IDBDatastore('datastore-crdt-example-data')
  const blockstore = new IDBBlockstore('datastore-crdt-example-blocks')
  await datastore.open()
  await blockstore.open()
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ datastore, blockstore }), {
    addresses: { listen: [] },
    transports: [webSockets()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    connectionGater: { denyDialMultiaddr: () => false },
    services: { identify: identify(), pubsub: gossipsub({ allowPublishToZeroTopicPeers: true }) }
  }), { sendBlocksDebounce: 0, sendWantlistDebounce: 0 })
  await helia.start()
  const store = await createHeliaCRDT(helia, { topic: config.topic, rebroadcastInterval: 1000 })
  const refresh = () => { void render(store) }
  store.addEventListener('put', refresh)
  store.addEventListener('delete', refresh)
  await render(store)

  const showSync = () => {
    const peers = helia.libp2p.getPeers().length
    const heads = store.heads().length
    setStatus(peers > 0 ? `connected to ${peers} peer${peers === 1 ? '' : 's'} · ${heads} head${heads === 1 ? '' : 's'}` : 'not connected', peers > 0 ? 'connected' : 'offline')
  }
  helia.libp2p.addEventListener('connection:open', showSync)
  helia.libp2p.addEventListener('connection:close', showSync)
  store.addEventListener('put', showSync)
  store.addEventListener('delete', showSync)

  $('put').addEventListener('click', async (e) => {
    e.preventDefault()
    await store.put(new Key($('key').value), enc($('value').value))
  })
  $('delete').addEventListener('click', async (e) => {
    e.preventDefault()
    await store.delete(new Key($('key').value))
  })

  setStatus('dialling the Node replica…', 'dialling')
  await helia.libp2p.dial(multiaddr(config.addr))
  showSync()
  document.body.dataset.ready = 'true'
}

main().catch(err => {
  setStatus(`error: ${err.message}`, 'error')
  console.error(err)
})
