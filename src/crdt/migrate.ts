/**
 * Layout migrations run once by `start()` before anything else reads the
 * store.
 *
 * Version 1 → 2: user keys and DAG names are stored escaped to ASCII (see
 * `escapeSegment` in layout.ts). A version 1 store may hold entries whose
 * key or DAG name has characters at or above U+007F; they are rewritten
 * under their escaped keys. The scans use prefixes whose next character is
 * "/" (ASCII), so they see every entry even on datastore-level. All
 * rewrites and the new version number land in one batch: a crash leaves
 * either the old layout or the new one, never a mix (a second pass could
 * not tell an escaped key from a raw key that held U+007F).
 */

import { Key } from 'interface-datastore'
import * as varint from 'uint8-varint'
import { escapeSegment, LAYOUT_VERSION } from './layout.js'
import type { Layout } from './layout.js'
import type { Logger } from '@libp2p/interface'
import type { Datastore, Pair } from 'interface-datastore'
import type { AbortOptions } from 'interface-store'

/**
 * Brings a store written with layout `from` (undefined = none recorded) to
 * `LAYOUT_VERSION`, writing the version. Returns how many entries moved.
 */
export async function migrateLayout (datastore: Datastore, layout: Layout, from: number | undefined, log: Logger, options?: AbortOptions): Promise<number> {
  const batch = datastore.batch()
  let moved = 0
  if (from == null || from < 2) {
    for (const base of [layout.keysPrefix, layout.elemsPrefix, layout.tombsPrefix, layout.dagHeadsPrefix]) {
      // no trailing "/": the next character after `base` is "/" for every entry
      for await (const pair of datastore.query({ prefix: base }, options) as AsyncIterable<Pair>) {
        const raw = pair.key.toString()
        if (raw.length <= base.length || raw[base.length] !== '/') continue
        const rest = raw.slice(base.length)
        const escaped = escapeSegment(rest)
        if (escaped === rest) continue
        batch.put(new Key(base + escaped, false), pair.value)
        batch.delete(pair.key)
        moved++
      }
    }
  }
  batch.put(layout.versionKey, varint.encode(LAYOUT_VERSION))
  options?.signal?.throwIfAborted()
  await batch.commit()
  if (moved > 0) log('migrated %d entries to layout version %d', moved, LAYOUT_VERSION)
  return moved
}
