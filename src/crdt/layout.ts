/**
 * Where the store keeps its state inside the user's datastore. The layout
 * mirrors go-ds-crdt's (see shared/spec/wire-format.md §6) so the two can be
 * compared side by side; `w/` (pending branches), `x/` (nodes with
 * links that were refused) and `s/r` (elements a snapshot removed) are ours.
 *
 * Invariant: the user-key and DAG-name parts of every key built here are
 * ASCII (see `escapeSegment`), so every prefix scan the store makes sees
 * every key it wrote, on any `Datastore`.
 */

import { Key } from 'interface-datastore'

/**
 * Current version of this layout, stored under `<ns>/crdt_version`.
 * Version 2 escapes non-ASCII code points in user keys and DAG names
 * (version 1 stored them raw; `migrateLayout` rewrites such stores).
 */
export const LAYOUT_VERSION = 2

/** Marks an escaped code point: U+007F, then six upper-case hex digits */
const ESCAPE = '\x7f'
// eslint-disable-next-line no-control-regex
const NEEDS_ESCAPE = /[^\x00-\x7e]/
const HEX_DIGITS = 6

/**
 * Makes a user key or DAG name ASCII, keeping its order: every code point
 * at or above U+007F becomes U+007F followed by its code point in six
 * upper-case hex digits; ASCII below U+007F is kept as is, so ASCII-only
 * keys are stored exactly as before.
 *
 * Why: datastore-level answers a prefix query with the range
 * [prefix, prefix + '\xFF'), which leaves out every key whose next character
 * after the prefix is U+00FF or above (its UTF-8 starts at C3 BF). Asking
 * LevelDB for a correct byte range would fix only datastore-level, and only
 * when this store talks to it directly (a NamespaceDatastore or any other
 * wrapper in between computes its own prefix range). With ASCII keys the
 * character after any prefix is below U+007F + 1, which every such range
 * includes. Order is kept because U+007F sorts after every other ASCII
 * character, UTF-8 byte order is code point order, and fixed-width hex
 * sorts numerically. Escaped strings contain no "/", so key structure is
 * unchanged.
 */
export function escapeSegment (s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return s
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i)
    if (unit < 0x7f) {
      out += s[i]
      continue
    }
    // a whole surrogate pair is one code point; a lone surrogate is kept as itself
    const cp = s.codePointAt(i) as number
    if (cp > 0xffff) i++
    out += ESCAPE + cp.toString(16).toUpperCase().padStart(HEX_DIGITS, '0')
  }
  return out
}

/** Reverses `escapeSegment` */
export function unescapeSegment (s: string): string {
  if (!s.includes(ESCAPE)) return s
  let out = ''
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== ESCAPE) {
      out += s[i]
      continue
    }
    const cp = Number.parseInt(s.slice(i + 1, i + 1 + HEX_DIGITS), 16)
    out += Number.isNaN(cp) ? s[i] : String.fromCodePoint(cp)
    if (!Number.isNaN(cp)) i += HEX_DIGITS
  }
  return out
}

export class Layout {
  public readonly namespace: string
  /** `<ns>/s/k` — visible values and priorities */
  public readonly keysPrefix: string
  /** `<ns>/s/s` — element markers */
  public readonly elemsPrefix: string
  /** `<ns>/s/t` — tombstones */
  public readonly tombsPrefix: string
  /**
   * `<ns>/s/r` — elements a snapshot removed (overwritten in the history it
   * covers): invisible, still tombstoned by deletes until compaction forgets
   * them (see src/snapshot/removal.ts)
   */
  public readonly removedPrefix: string
  /** `<ns>/h` — heads of the default DAG */
  public readonly headsPrefix: string
  /** `<ns>/a` — heads of named DAGs */
  public readonly dagHeadsPrefix: string
  /** `<ns>/b` — processed-block markers */
  public readonly processedPrefix: string
  /** `<ns>/w` — branches whose walk has not finished */
  public readonly pendingPrefix: string
  /** `<ns>/x` — processed nodes that had links this store refused (unusable CIDs) */
  public readonly rejectedPrefix: string
  public readonly dirtyKey: Key
  public readonly badShutdownKey: Key
  public readonly versionKey: Key

  constructor (namespace: string) {
    const ns = new Key(namespace).toString()
    this.namespace = ns === '/' ? '' : ns
    this.keysPrefix = `${this.namespace}/s/k`
    this.elemsPrefix = `${this.namespace}/s/s`
    this.tombsPrefix = `${this.namespace}/s/t`
    this.removedPrefix = `${this.namespace}/s/r`
    this.headsPrefix = `${this.namespace}/h`
    this.dagHeadsPrefix = `${this.namespace}/a`
    this.processedPrefix = `${this.namespace}/b`
    this.pendingPrefix = `${this.namespace}/w`
    this.rejectedPrefix = `${this.namespace}/x`
    this.dirtyKey = new Key(`${this.namespace}/d`)
    this.badShutdownKey = new Key(`${this.namespace}/bs`)
    this.versionKey = new Key(`${this.namespace}/crdt_version`)
  }

  // Each key comes as a `Key` and as its string (`…Id`, what `Key.toString()`
  // gives): the merge's hot paths hand strings to the WriteSet, which then
  // builds no `Key` for them (see write-set.ts)

  valueId (key: string): string {
    return `${this.keysPrefix}${seg(key)}/v`
  }

  valueKey (key: string): Key {
    return new Key(this.valueId(key), false)
  }

  priorityId (key: string): string {
    return `${this.keysPrefix}${seg(key)}/p`
  }

  priorityKey (key: string): Key {
    return new Key(this.priorityId(key), false)
  }

  /** Prefix (with trailing slash) under which the elements of `key` live */
  elemsOf (key: string): string {
    return `${this.elemsPrefix}${seg(key)}/`
  }

  elemId (key: string, id: string): string {
    return `${this.elemsPrefix}${seg(key)}${id}`
  }

  elemKey (key: string, id: string): Key {
    return new Key(this.elemId(key, id), false)
  }

  /** Prefix (with trailing slash) under which the removed elements of `key` live */
  removedOf (key: string): string {
    return `${this.removedPrefix}${seg(key)}/`
  }

  removedId (key: string, id: string): string {
    return `${this.removedPrefix}${seg(key)}${id}`
  }

  removedKey (key: string, id: string): Key {
    return new Key(this.removedId(key, id), false)
  }

  tombId (key: string, id: string): string {
    return `${this.tombsPrefix}${seg(key)}${id}`
  }

  tombKey (key: string, id: string): Key {
    return new Key(this.tombId(key, id), false)
  }

  headId (dagName: string, id: string): string {
    return dagName === ''
      ? `${this.headsPrefix}${id}`
      : `${this.dagHeadsPrefix}${seg(cleanKey(dagName))}${id}`
  }

  headKey (dagName: string, id: string): Key {
    return new Key(this.headId(dagName, id), false)
  }

  processedId (id: string): string {
    return `${this.processedPrefix}${id}`
  }

  processedKey (id: string): Key {
    return new Key(this.processedId(id), false)
  }

  pendingId (id: string): string {
    return `${this.pendingPrefix}${id}`
  }

  pendingKey (id: string): Key {
    return new Key(this.pendingId(id), false)
  }

  rejectedId (id: string): string {
    return `${this.rejectedPrefix}${id}`
  }

  rejectedKey (id: string): Key {
    return new Key(this.rejectedId(id), false)
  }
}

/**
 * Normalises a key string the way go-datastore's `NewKey` cleans it
 * (`path.Clean` with a leading slash), so "/a//b/", "a/b" and "/a/./b" name
 * the same entry on every replica, Go or TypeScript.
 */
export function cleanKey (key: string): string {
  if (key.charCodeAt(0) === 47 && !key.includes('//') && !key.includes('/.') && (key.length === 1 || key.charCodeAt(key.length - 1) !== 47)) {
    return key
  }
  const parts: string[] = []
  for (const part of key.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      parts.pop()
      continue
    }
    parts.push(part)
  }
  return '/' + parts.join('/')
}

/** The path segment used for a key inside a prefix: the root key "/" has none */
function seg (key: string): string {
  return key === '/' ? '' : escapeSegment(key)
}
