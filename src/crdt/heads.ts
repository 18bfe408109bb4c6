/**
 * The heads of each DAG: the nodes no processed node links to. New local
 * writes link to all heads of their DAG and take height max(heights) + 1.
 *
 * Heads live in the datastore (`h/<block key>` for the default DAG,
 * `a/<dag name>/<block key>` for named DAGs, the name escaped to ASCII, value uvarint(height)) and in a
 * cache loaded at start. Changes are written through a WriteSet and reach the
 * cache only once that WriteSet commits.
 */

import * as varint from 'uint8-varint'
import { compare as compareBytes } from 'uint8arrays/compare'
import { blockKey, cidFromBlockKey } from '../codec/block-key.js'
import { cidKey } from '../codec/cid-key.js'
import { CorruptStateError } from '../errors.js'
import { unescapeSegment } from './layout.js'
import type { Layout } from './layout.js'
import type { WriteSet } from './write-set.js'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'
import type { CID } from 'multiformats/cid'

/** A head of a DAG */
export interface Head {
  cid: CID
  /** The node's priority: its height in the DAG */
  height: number
  /** Empty for the default DAG */
  dagName: string
}

export class Heads {
  private readonly store: Datastore
  private readonly layout: Layout
  /** DAG name → `cidKey` → head (CIDs keyed by bytes, not base32 text: see cid-key.ts) */
  private readonly cache = new Map<string, Map<string, Head>>()

  constructor (store: Datastore, layout: Layout) {
    this.store = store
    this.layout = layout
  }

  /** Loads every head from the datastore into the cache */
  async load (options?: AbortOptions): Promise<void> {
    this.cache.clear()
    for await (const pair of this.store.query({ prefix: this.layout.headsPrefix + '/' }, options) as AsyncIterable<Pair>) {
      this.cacheHead(this.parse(pair, this.layout.headsPrefix, ''))
    }
    const dagPrefix = this.layout.dagHeadsPrefix + '/'
    for await (const pair of this.store.query({ prefix: dagPrefix }, options) as AsyncIterable<Pair>) {
      const raw = pair.key.toString()
      const cut = raw.lastIndexOf('/')
      const stored = raw.slice(dagPrefix.length, cut)
      this.cacheHead(this.parse(pair, dagPrefix + stored, unescapeSegment(stored)))
    }
  }

  private parse (pair: Pair, prefix: string, dagName: string): Head {
    const id = pair.key.toString().slice(prefix.length)
    try {
      return { cid: cidFromBlockKey(id), height: varint.decode(pair.value), dagName }
    } catch (err: any) {
      throw new CorruptStateError(`Head ${pair.key} does not decode: ${err.message}`)
    }
  }

  /** Heads of one DAG, sorted by CID bytes so node links are deterministic */
  list (dagName: string): Head[] {
    const heads = [...(this.cache.get(dagName)?.values() ?? [])]
    return heads.sort((a, b) => compareBytes(a.cid.bytes, b.cid.bytes))
  }

  /** Heads of every DAG */
  all (): Head[] {
    return [...this.cache.keys()].sort().flatMap(name => this.list(name))
  }

  /** Names of the DAGs that have heads */
  dagNames (): string[] {
    return [...this.cache.keys()]
  }

  count (dagName: string): number {
    return this.cache.get(dagName)?.size ?? 0
  }

  /** The greatest height among the heads of a DAG (0 when it has none) */
  maxHeight (dagName?: string): number {
    const heads = dagName == null ? this.all() : this.list(dagName)
    return heads.reduce((max, h) => Math.max(max, h.height), 0)
  }

  get (dagName: string, cid: CID): Head | undefined {
    return this.cache.get(dagName)?.get(cidKey(cid))
  }

  add (tx: WriteSet, head: Head): void {
    tx.put(this.layout.headId(head.dagName, blockKey(head.cid)), varint.encode(head.height))
    tx.onCommit(() => { this.cacheHead(head) })
  }

  remove (tx: WriteSet, dagName: string, cid: CID): void {
    tx.delete(this.layout.headId(dagName, blockKey(cid)))
    tx.onCommit(() => {
      const dag = this.cache.get(dagName)
      dag?.delete(cidKey(cid))
      if (dag?.size === 0) this.cache.delete(dagName)
    })
  }

  private cacheHead (head: Head): void {
    let dag = this.cache.get(head.dagName)
    if (dag == null) {
      dag = new Map()
      this.cache.set(head.dagName, dag)
    }
    dag.set(cidKey(head.cid), head)
  }
}
