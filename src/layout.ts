/**
 * Where the store keeps its state inside the user's datastore. The layout
 * mirrors go-ds-crdt's (see shared/spec/wire-format.md §6) so the two can be
 * compared side by side; `w/` (pending branches) is ours.
 */

import { Key } from 'interface-datastore'

/** Current version of this layout, stored under `<ns>/crdt_version` */
export const LAYOUT_VERSION = 1

export class Layout {
  public readonly namespace: string
  /** `<ns>/s/k` — visible values and priorities */
  public readonly keysPrefix: string
  /** `<ns>/s/s` — element markers */
  public readonly elemsPrefix: string
  /** `<ns>/s/t` — tombstones */
  public readonly tombsPrefix: string
  /** `<ns>/h` — heads of the default DAG */
  public readonly headsPrefix: string
  /** `<ns>/a` — heads of named DAGs */
  public readonly dagHeadsPrefix: string
  /** `<ns>/b` — processed-block markers */
  public readonly processedPrefix: string
  /** `<ns>/w` — branches whose walk has not finished */
  public readonly pendingPrefix: string
  public readonly dirtyKey: Key
  public readonly badShutdownKey: Key
  public readonly versionKey: Key

  constructor (namespace: string) {
    const ns = new Key(namespace).toString()
    this.namespace = ns === '/' ? '' : ns
    this.keysPrefix = `${this.namespace}/s/k`
    this.elemsPrefix = `${this.namespace}/s/s`
    this.tombsPrefix = `${this.namespace}/s/t`
    this.headsPrefix = `${this.namespace}/h`
    this.dagHeadsPrefix = `${this.namespace}/a`
    this.processedPrefix = `${this.namespace}/b`
    this.pendingPrefix = `${this.namespace}/w`
    this.dirtyKey = new Key(`${this.namespace}/d`)
    this.badShutdownKey = new Key(`${this.namespace}/bs`)
    this.versionKey = new Key(`${this.namespace}/crdt_version`)
  }

  valueKey (key: string): Key {
    return new Key(`${this.keysPrefix}${seg(key)}/v`, false)
  }

  priorityKey (key: string): Key {
    return new Key(`${this.keysPrefix}${seg(key)}/p`, false)
  }

  /** Prefix (with trailing slash) under which the elements of `key` live */
  elemsOf (key: string): string {
    return `${this.elemsPrefix}${seg(key)}/`
  }

  elemKey (key: string, id: string): Key {
    return new Key(`${this.elemsPrefix}${seg(key)}${id}`, false)
  }

  tombKey (key: string, id: string): Key {
    return new Key(`${this.tombsPrefix}${seg(key)}${id}`, false)
  }

  headKey (dagName: string, id: string): Key {
    return dagName === ''
      ? new Key(`${this.headsPrefix}${id}`, false)
      : new Key(`${this.dagHeadsPrefix}${seg(cleanKey(dagName))}${id}`, false)
  }

  processedKey (id: string): Key {
    return new Key(`${this.processedPrefix}${id}`, false)
  }

  pendingKey (id: string): Key {
    return new Key(`${this.pendingPrefix}${id}`, false)
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
  return key === '/' ? '' : key
}
