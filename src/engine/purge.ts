/**
 * Purging a named DAG: walks its processed nodes from its heads using local
 * blocks only, removes the set entries those nodes added (elements they
 * wrote, tombstones naming them), their processed markers, the unfinished
 * branches below them and the DAG's heads, then recomputes the visible value
 * of every key touched. Heads go last, in the same batch, so a failure
 * leaves the DAG purgeable again.
 */

import { blockKey } from '../codec/block-key.js'
import { cleanKey } from '../crdt/layout.js'
import { WriteSet } from '../crdt/write-set.js'
import type { Engine } from './engine.js'
import type { DAGBlockstore } from '../interfaces.js'
import type { Logger } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

export interface PurgeComponents {
  engine: Engine
  blockstore: DAGBlockstore & { delete?(cid: CID, options?: AbortOptions): unknown }
  datastore: Datastore
  log: Logger
}

export async function purgeDAG (components: PurgeComponents, dagName: string, options?: AbortOptions): Promise<number> {
  const { engine, blockstore, datastore, log } = components
  return engine.exclusive(async () => {
    const heads = engine.heads.list(dagName)
    const tx = new WriteSet(datastore)
    const entries = new Map<string, Set<string>>()
    const visited = new Set<string>()
    const blocks: CID[] = []
    const stack = heads.map(h => h.cid)

    while (stack.length > 0) {
      const cid = stack.pop() as CID
      const id = blockKey(cid)
      if (visited.has(id)) continue
      visited.add(id)
      if (!(await engine.isProcessed(cid, options))) {
        // an unfinished branch of this DAG: forget it rather than fetch it
        tx.delete(engine.layout.pendingKey(id))
        continue
      }
      if (!(await blockstore.has(cid, options))) {
        log('purge: block %c is not stored locally, skipping it', cid)
        tx.delete(engine.layout.processedKey(id))
        continue
      }
      const node = await engine.fetchNode(cid, blockstore, options)
      if (node.delta.dagName !== dagName) continue
      for (const element of node.delta.elements) {
        add(entries, cleanKey(element.key), id)
      }
      tx.delete(engine.layout.processedKey(id))
      tx.delete(engine.layout.pendingKey(id))
      blocks.push(cid)
      stack.push(...node.links)
    }

    const changes = await engine.set.purge(tx, entries, options)
    for (const head of heads) {
      engine.heads.remove(tx, dagName, head.cid)
    }
    await tx.commit(options)

    if (typeof blockstore.delete === 'function') {
      for (const cid of blocks) {
        await blockstore.delete(cid, options)
      }
    }
    engine.announceChanges(changes)
    log('purged DAG %s: %d nodes', dagName, blocks.length)
    return blocks.length
  })
}

function add (entries: Map<string, Set<string>>, key: string, id: string): void {
  let ids = entries.get(key)
  if (ids == null) {
    ids = new Set()
    entries.set(key, ids)
  }
  ids.add(id)
}
