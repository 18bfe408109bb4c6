/**
 * Debug views of the DAG: an indented listing and a Graphviz (dot) graph,
 * read from local blocks only. Meant for small DAGs; both stop after
 * `limit` nodes. Kept apart from the engine so it carries none of this.
 */

import { blockKey } from '../codec/block-key.js'
import type { BlockGetter, Engine } from './engine.js'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

export interface DAGViewOptions extends AbortOptions {
  /** Only this DAG (default: all) */
  dagName?: string
  /** Nodes to show at most */
  limit?: number
}

interface ViewNode {
  cid: CID
  depth: number
  priority: number
  dagName: string
  links: CID[]
  keys: string[]
  tombstones: number
}

async function collect (engine: Engine, blockstore: BlockGetter & { has(cid: CID): boolean | Promise<boolean> }, options: DAGViewOptions = {}): Promise<{ nodes: ViewNode[], truncated: boolean }> {
  const limit = options.limit ?? 1000
  const heads = options.dagName == null ? engine.heads.all() : engine.heads.list(options.dagName)
  const seen = new Set<string>()
  const nodes: ViewNode[] = []
  const stack: Array<{ cid: CID, depth: number }> = heads.map(h => ({ cid: h.cid, depth: 0 })).reverse()
  while (stack.length > 0 && nodes.length < limit) {
    const { cid, depth } = stack.pop() as { cid: CID, depth: number }
    if (seen.has(cid.toString())) continue
    seen.add(cid.toString())
    if (!(await blockstore.has(cid))) {
      nodes.push({ cid, depth, priority: -1, dagName: '?', links: [], keys: [], tombstones: 0 })
      continue
    }
    const node = await engine.fetchNode(cid, blockstore, options)
    nodes.push({
      cid,
      depth,
      priority: node.delta.priority,
      dagName: node.delta.dagName,
      links: node.links,
      keys: node.delta.elements.map(e => e.key),
      tombstones: node.delta.tombstones.length
    })
    for (const link of [...node.links].reverse()) stack.push({ cid: link, depth: depth + 1 })
  }
  return { nodes, truncated: stack.length > 0 }
}

function short (cid: CID): string {
  const s = cid.toString()
  return s.slice(-8)
}

/** An indented listing: one line per node with its priority, DAG, keys and links */
export async function printDAG (engine: Engine, blockstore: BlockGetter & { has(cid: CID): boolean | Promise<boolean> }, options?: DAGViewOptions): Promise<string> {
  const { nodes, truncated } = await collect(engine, blockstore, options)
  const lines = nodes.map(n => {
    const indent = '  '.repeat(Math.min(n.depth, 40))
    if (n.priority < 0) return `${indent}- ${short(n.cid)} (not stored locally)`
    const keys = n.keys.length > 3 ? `${n.keys.slice(0, 3).join(', ')} +${n.keys.length - 3}` : n.keys.join(', ')
    const tombs = n.tombstones > 0 ? ` -${n.tombstones} tombstones` : ''
    const dag = n.dagName === '' ? '' : ` [${n.dagName}]`
    return `${indent}- ${n.priority} | ${short(n.cid)}${dag}: {${keys}}${tombs} -> ${n.links.map(short).join(', ')}`
  })
  if (truncated) lines.push('…')
  return lines.join('\n')
}

/** A Graphviz digraph of the DAG, nodes labelled with priority and short CID */
export async function dotDAG (engine: Engine, blockstore: BlockGetter & { has(cid: CID): boolean | Promise<boolean> }, options?: DAGViewOptions): Promise<string> {
  const { nodes } = await collect(engine, blockstore, options)
  const id = (cid: CID): string => JSON.stringify(blockKey(cid))
  const out = ['digraph CRDTDAG {', '  rankdir=TB;']
  for (const n of nodes) {
    out.push(`  ${id(n.cid)} [label=${JSON.stringify(`${n.priority < 0 ? '?' : n.priority} | ${short(n.cid)}`)}];`)
    for (const link of n.links) out.push(`  ${id(n.cid)} -> ${id(link)};`)
  }
  out.push('}')
  return out.join('\n')
}
