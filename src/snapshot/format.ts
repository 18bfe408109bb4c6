/**
 * The snapshot format: the state of the OR-set at a set of covered heads,
 * as a content-addressed DAG of dag-cbor blocks (see README, "Bounded
 * history").
 *
 * - The root records the format version, the covered heads (DAG name, CID,
 *   height), a 16-byte snapshot id derived from the covered heads, the
 *   number of element and tombstone records, and the CIDs of the chunks
 *   holding them.
 * - An element chunk holds `[key, id, priority, value]` records: the live
 *   elements that are not overwritten (per key, those equal to its best in
 *   priority and value), each with the block key of the node that added it
 *   and that node's priority (go-ds-crdt #369's Element fields 1-4). A
 *   tombstone chunk holds `[key, id]` records. A node chunk holds
 *   `[id, height]` records: every node whose effects the snapshot holds
 *   (the covered history). Elements that are tombstoned are left out (their
 *   tombstones are kept); so are overwritten ones: a snapshot *removes*
 *   every element of its covered nodes it does not list (removal.ts).
 * - Records are in strictly ascending (escaped key, id) order (nodes: id
 *   order) across all chunks of a kind, so a state has exactly one snapshot: no timestamps,
 *   no replica ids, no map iteration order.
 *
 * Invariant: every value returned by a decoder here has been checked (types,
 * ranges, canonical keys, block-key ids, order); anything else throws
 * `InvalidSnapshotError`. Each block is checked against its CID before it is
 * decoded (`verifyBlock`).
 */

import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals as uint8ArrayEquals } from 'uint8arrays/equals'
import { isBlockKey } from '../codec/block-key.js'
import { canonicalDagName, MAX_PRIORITY } from '../codec/delta.js'
import { cleanKey, escapeSegment } from '../crdt/layout.js'
import { InvalidSnapshotError } from '../errors.js'

/**
 * Version of the snapshot format written by this release (2: node chunks,
 * overwritten elements left out; version 1 carried every live element and
 * no nodes, and is refused)
 */
export const SNAPSHOT_VERSION = 2

/** Chunks are closed once their records reach this many bytes (a larger single record gets a chunk of its own) */
export const DEFAULT_CHUNK_BYTES = 256 * 1024

/** The largest snapshot block accepted, root or chunk (bitswap peers refuse blocks above 4 MiB) */
export const MAX_SNAPSHOT_BLOCK_BYTES = 4 * 1024 * 1024

/** Length of the snapshot id (as go-ds-crdt #369's `snapshotId`) */
export const SNAPSHOT_ID_BYTES = 16

/** A head a snapshot covers */
export interface SnapshotHead {
  /** Empty for the default DAG */
  dagName: string
  cid: CID
  height: number
}

/** A live element of the set */
export interface SnapshotElement {
  key: string
  /** Block key of the DAG node that added the element */
  id: string
  /** That node's priority */
  priority: number
  value: Uint8Array
}

/** A tombstone: the element `id` of `key` is removed */
export interface SnapshotTombstone {
  key: string
  id: string
}

/** A node of the covered history: its block key and height (0: unknown) */
export interface SnapshotNode {
  id: string
  height: number
}

/** The decoded root block of a snapshot */
export interface SnapshotRoot {
  version: number
  /** First 16 bytes of sha256 over the covered heads' CID bytes, sorted */
  snapshotId: Uint8Array
  heads: SnapshotHead[]
  elementCount: number
  tombstoneCount: number
  nodeCount: number
  elementChunks: CID[]
  tombstoneChunks: CID[]
  nodeChunks: CID[]
}

/** An encoded block */
export interface SnapshotBlock {
  cid: CID
  bytes: Uint8Array
}

/** The order of records: by escaped key (code point order), then by id */
export function compareRecords (a: { key: string, id: string }, b: { key: string, id: string }): number {
  const ka = escapeSegment(a.key)
  const kb = escapeSegment(b.key)
  if (ka !== kb) return ka < kb ? -1 : 1
  if (a.id === b.id) return 0
  return a.id < b.id ? -1 : 1
}

/** The canonical order of covered heads: by DAG name, then CID bytes */
export function compareHeads (a: SnapshotHead, b: SnapshotHead): number {
  if (a.dagName !== b.dagName) return a.dagName < b.dagName ? -1 : 1
  return compareBytes(a.cid.bytes, b.cid.bytes)
}

/** The 16-byte id of a snapshot covering `heads` */
export async function snapshotIdOf (heads: SnapshotHead[]): Promise<Uint8Array> {
  const cids = heads.map(h => h.cid.bytes).sort(compareBytes)
  const all = new Uint8Array(cids.reduce((n, c) => n + c.byteLength, 0))
  let offset = 0
  for (const c of cids) {
    all.set(c, offset)
    offset += c.byteLength
  }
  const digest = await sha256.digest(all)
  return digest.digest.slice(0, SNAPSHOT_ID_BYTES)
}

/** Encodes a value as a dag-cbor block with a CIDv1 sha2-256 */
export async function encodeBlock (value: unknown): Promise<SnapshotBlock> {
  const bytes = dagCbor.encode(value)
  if (bytes.byteLength > MAX_SNAPSHOT_BLOCK_BYTES) {
    throw new InvalidSnapshotError(`A snapshot block would be ${bytes.byteLength} bytes, over the ${MAX_SNAPSHOT_BLOCK_BYTES} byte limit`)
  }
  const digest = await sha256.digest(bytes)
  return { cid: CID.createV1(dagCbor.code, digest), bytes }
}

/**
 * Checks that `bytes` are the block `cid` names: a dag-cbor CID hashed with
 * sha2-256, within the size limit, whose digest matches
 */
export async function verifyBlock (cid: CID, bytes: Uint8Array): Promise<void> {
  if (cid.code !== dagCbor.code || cid.multihash.code !== sha256.code) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} is not a dag-cbor sha2-256 block`)
  }
  if (bytes.byteLength > MAX_SNAPSHOT_BLOCK_BYTES) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} is ${bytes.byteLength} bytes, over the ${MAX_SNAPSHOT_BLOCK_BYTES} byte limit`)
  }
  const digest = await sha256.digest(bytes)
  if (!uint8ArrayEquals(digest.bytes, cid.multihash.bytes)) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} does not match its hash`)
  }
}

export function encodeRoot (root: SnapshotRoot): unknown {
  return {
    v: root.version,
    id: root.snapshotId,
    heads: root.heads.map(h => [h.dagName, h.cid, h.height]),
    ne: root.elementCount,
    nt: root.tombstoneCount,
    nn: root.nodeCount,
    elements: root.elementChunks,
    tombstones: root.tombstoneChunks,
    nodes: root.nodeChunks
  }
}

export function encodeElementChunk (records: SnapshotElement[]): unknown {
  return { e: records.map(r => [r.key, r.id, r.priority, r.value]) }
}

export function encodeTombstoneChunk (records: SnapshotTombstone[]): unknown {
  return { t: records.map(r => [r.key, r.id]) }
}

export function encodeNodeChunk (records: SnapshotNode[]): unknown {
  return { n: records.map(r => [r.id, r.height]) }
}

function decodeCbor (cid: CID, bytes: Uint8Array): any {
  try {
    return dagCbor.decode(bytes)
  } catch (err: any) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} is not valid dag-cbor: ${err.message}`)
  }
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return value != null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array) && CID.asCID(value) == null
}

function checkFields (cid: CID, value: Record<string, unknown>, fields: string[]): void {
  const keys = Object.keys(value).sort()
  if (keys.join(',') !== [...fields].sort().join(',')) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} has fields [${keys.join(', ')}], expected [${fields.join(', ')}]`)
  }
}

function count (cid: CID, value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidSnapshotError(`Snapshot block ${cid}: ${what} must be a non-negative integer`)
  }
  return value
}

function cidList (cid: CID, value: unknown, what: string): CID[] {
  if (!Array.isArray(value)) throw new InvalidSnapshotError(`Snapshot block ${cid}: ${what} must be a list of CIDs`)
  return value.map(v => {
    const c = CID.asCID(v)
    if (c == null || c.version !== 1 || c.code !== dagCbor.code || c.multihash.code !== sha256.code) {
      throw new InvalidSnapshotError(`Snapshot block ${cid}: ${what} holds something other than a dag-cbor sha2-256 CID`)
    }
    return c
  })
}

function checkKey (cid: CID, key: unknown): string {
  if (typeof key !== 'string' || cleanKey(key) !== key) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} holds a key that is not a clean datastore key: ${String(key)}`)
  }
  return key
}

function checkId (cid: CID, id: unknown): string {
  if (typeof id !== 'string' || !isBlockKey(id)) {
    throw new InvalidSnapshotError(`Snapshot block ${cid} holds an element id that is not a block key: ${String(id)}`)
  }
  return id
}

/** Decodes and checks a root block (already verified against `cid`) */
export function decodeRoot (cid: CID, bytes: Uint8Array): SnapshotRoot {
  const value = decodeCbor(cid, bytes)
  if (!isRecord(value)) throw new InvalidSnapshotError(`Snapshot root ${cid} is not a map`)
  if (value.v !== SNAPSHOT_VERSION) {
    throw new InvalidSnapshotError(`Snapshot root ${cid} has format version ${String(value.v)}; this release reads version ${SNAPSHOT_VERSION}`)
  }
  checkFields(cid, value, ['v', 'id', 'heads', 'ne', 'nt', 'nn', 'elements', 'tombstones', 'nodes'])
  if (!(value.id instanceof Uint8Array) || value.id.byteLength !== SNAPSHOT_ID_BYTES) {
    throw new InvalidSnapshotError(`Snapshot root ${cid}: id must be ${SNAPSHOT_ID_BYTES} bytes`)
  }
  if (!Array.isArray(value.heads)) throw new InvalidSnapshotError(`Snapshot root ${cid}: heads must be a list`)
  const heads: SnapshotHead[] = value.heads.map((h: unknown) => {
    if (!Array.isArray(h) || h.length !== 3) throw new InvalidSnapshotError(`Snapshot root ${cid}: a head must be [dagName, cid, height]`)
    const [dagName, headCid, height] = h
    const c = CID.asCID(headCid)
    if (typeof dagName !== 'string' || c == null || c.code !== 0x70 || !Number.isSafeInteger(height) || height < 1 || height > MAX_PRIORITY) {
      throw new InvalidSnapshotError(`Snapshot root ${cid} holds a malformed head`)
    }
    let canonical: string | undefined
    try {
      canonical = canonicalDagName(dagName)
    } catch {}
    if (canonical !== dagName) {
      throw new InvalidSnapshotError(`Snapshot root ${cid} holds a head of a DAG name that is not canonical: ${dagName.slice(0, 64)}`)
    }
    return { dagName, cid: c, height }
  })
  for (let i = 1; i < heads.length; i++) {
    if (compareHeads(heads[i - 1], heads[i]) >= 0) {
      throw new InvalidSnapshotError(`Snapshot root ${cid}: heads are not in strictly ascending order`)
    }
  }
  return {
    version: value.v,
    snapshotId: value.id,
    heads,
    elementCount: count(cid, value.ne, 'ne'),
    tombstoneCount: count(cid, value.nt, 'nt'),
    nodeCount: count(cid, value.nn, 'nn'),
    elementChunks: cidList(cid, value.elements, 'elements'),
    tombstoneChunks: cidList(cid, value.tombstones, 'tombstones'),
    nodeChunks: cidList(cid, value.nodes, 'nodes')
  }
}

/** The records of a chunk: a map with the one field `field`, a non-empty list */
function chunkList (cid: CID, bytes: Uint8Array, field: 'e' | 't' | 'n'): unknown[] {
  const value = decodeCbor(cid, bytes)
  if (!isRecord(value)) throw new InvalidSnapshotError(`Snapshot chunk ${cid} is not a map`)
  checkFields(cid, value, [field])
  const records = value[field]
  if (!Array.isArray(records) || records.length === 0) throw new InvalidSnapshotError(`Snapshot chunk ${cid}: ${field} must be a non-empty list`)
  return records
}

/** Decodes and checks an element chunk (order across chunks is checked by the caller) */
export function decodeElementChunk (cid: CID, bytes: Uint8Array): SnapshotElement[] {
  return chunkList(cid, bytes, 'e').map((r: unknown) => {
    if (!Array.isArray(r) || r.length !== 4) throw new InvalidSnapshotError(`Snapshot chunk ${cid}: an element must be [key, id, priority, value]`)
    const [key, id, priority, v] = r
    if (!Number.isSafeInteger(priority) || priority < 0 || priority > MAX_PRIORITY) {
      throw new InvalidSnapshotError(`Snapshot chunk ${cid} holds an element priority out of range: ${String(priority)}`)
    }
    if (!(v instanceof Uint8Array)) throw new InvalidSnapshotError(`Snapshot chunk ${cid} holds an element value that is not bytes`)
    return { key: checkKey(cid, key), id: checkId(cid, id), priority, value: v }
  })
}

/** Decodes and checks a tombstone chunk */
export function decodeTombstoneChunk (cid: CID, bytes: Uint8Array): SnapshotTombstone[] {
  return chunkList(cid, bytes, 't').map((r: unknown) => {
    if (!Array.isArray(r) || r.length !== 2) throw new InvalidSnapshotError(`Snapshot chunk ${cid}: a tombstone must be [key, id]`)
    return { key: checkKey(cid, r[0]), id: checkId(cid, r[1]) }
  })
}

/** Decodes and checks a node chunk (order across chunks is checked by the caller) */
export function decodeNodeChunk (cid: CID, bytes: Uint8Array): SnapshotNode[] {
  return chunkList(cid, bytes, 'n').map((r: unknown) => {
    if (!Array.isArray(r) || r.length !== 2) throw new InvalidSnapshotError(`Snapshot chunk ${cid}: a node must be [id, height]`)
    const [id, height] = r
    if (!Number.isSafeInteger(height) || height < 0 || height > MAX_PRIORITY) {
      throw new InvalidSnapshotError(`Snapshot chunk ${cid} holds a node height out of range: ${String(height)}`)
    }
    return { id: checkId(cid, id), height }
  })
}

/** Splits records into chunks of about `chunkBytes`, keeping their order */
export function chunkRecords <T extends { key?: string, id: string, value?: Uint8Array }> (records: T[], chunkBytes: number): T[][] {
  const chunks: T[][] = []
  let current: T[] = []
  let size = 0
  for (const r of records) {
    // key and id are ASCII-dominated; 16 bytes covers the CBOR framing of a record
    const bytes = (r.key?.length ?? 0) * 3 + r.id.length + (r.value?.byteLength ?? 0) + 16
    if (current.length > 0 && size + bytes > chunkBytes) {
      chunks.push(current)
      current = []
      size = 0
    }
    current.push(r)
    size += bytes
  }
  if (current.length > 0) chunks.push(current)
  return chunks
}

function compareBytes (a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.byteLength, b.byteLength)
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i] - b[i]
  }
  return a.byteLength - b.byteLength
}
