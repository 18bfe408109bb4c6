/**
 * Deltas: the payload of every DAG node, encoded exactly as go-ds-crdt
 * encodes them (proto3 `crdt.pb.Delta`).
 *
 * Decoding is where untrusted deltas are checked: a decoded delta has a
 * canonical DAG name within `MAX_DAG_NAME_BYTES`, tombstone ids that are
 * each exactly one block key, and a priority within `MAX_PRIORITY` (larger
 * ones saturate, see `decodeDelta`).
 */

import { encodingLength } from 'uint8-varint'
import { cleanKey } from '../crdt/layout.js'
import { MalformedDeltaError } from '../errors.js'
import { isBlockKey } from './block-key.js'
import { Delta as PBDelta } from './pb/delta.js'
import type { Element as PBElement } from './pb/delta.js'

/** One element of a delta: a key and its value, or a tombstone naming an element id */
export interface DeltaElement {
  /** The datastore key as a string, e.g. "/hello" */
  key: string
  /** Empty in elements; the block key of the tombstoned element in tombstones */
  id: string
  /** The value (empty in tombstones) */
  value: Uint8Array
}

/** A decoded delta */
export interface Delta {
  elements: DeltaElement[]
  tombstones: DeltaElement[]
  /** The node's height in its DAG */
  priority: number
  /** Empty for the default DAG */
  dagName: string
}

/**
 * The largest priority the store represents: one below
 * `Number.MAX_SAFE_INTEGER`, so `priority + 1` still encodes. No honest
 * replica gets near it; larger priorities read from the network are
 * saturated to it, and a local write on top of a node at this priority
 * takes this priority too (it cannot go higher), so writes stay possible.
 */
export const MAX_PRIORITY = Number.MAX_SAFE_INTEGER - 1

/** The longest DAG name (UTF-8 bytes) accepted from the local API or the network */
export const MAX_DAG_NAME_BYTES = 512

/**
 * The canonical form of a DAG name: "" for the default DAG, else a clean
 * path without leading or trailing slash ("/x/", "x//y" → "x", "x/y").
 * go-datastore keys are cleaned the same way, and heads are stored under
 * the cleaned name, so two spellings must never be two DAGs. Throws
 * `MalformedDeltaError` for names longer than `MAX_DAG_NAME_BYTES`.
 */
export function canonicalDagName (name: string): string {
  if (textEncoder.encode(name).byteLength > MAX_DAG_NAME_BYTES) {
    throw new MalformedDeltaError(`DAG name is longer than ${MAX_DAG_NAME_BYTES} bytes`)
  }
  if (name === '') return ''
  return cleanKey(name).slice(1)
}

const EMPTY = new Uint8Array(0)

/**
 * Serialises a delta into go-ds-crdt's protobuf bytes. Throws
 * `MalformedDeltaError` for a priority that is not an integer in
 * [0, MAX_PRIORITY] (the engine saturates local priorities, so only a
 * caller building deltas by hand can get there).
 */
export function encodeDelta (delta: Delta): Uint8Array {
  if (!(Number.isInteger(delta.priority) && delta.priority >= 0 && delta.priority <= MAX_PRIORITY)) {
    throw new MalformedDeltaError(`Delta priority ${delta.priority} is not an integer in [0, ${MAX_PRIORITY}]`)
  }
  return PBDelta.encode({
    elements: delta.elements as PBElement[],
    tombstones: delta.tombstones as PBElement[],
    priority: BigInt(delta.priority),
    dagName: delta.dagName
  })
}

/**
 * Parses go-ds-crdt protobuf delta bytes, throwing `MalformedDeltaError` on
 * bad input: bytes that do not decode, a tombstone whose id is not exactly
 * one block key, a DAG name over `MAX_DAG_NAME_BYTES`.
 *
 * The DAG name is canonicalised (`canonicalDagName`). A priority above
 * `MAX_PRIORITY` is saturated to it rather than refused: refusing would drop
 * the node and, with it, every honest node below it in the walk (go-ds-crdt
 * keeps such nodes as uint64). The engine then refuses a node that claims
 * more than its processed links allow (see engine.ts).
 */
export function decodeDelta (bytes: Uint8Array): Delta {
  let pb: PBDelta
  try {
    pb = PBDelta.decode(bytes)
  } catch (err: any) {
    throw new MalformedDeltaError(`Delta does not decode: ${err.message}`)
  }

  for (const tomb of pb.tombstones) {
    if (!isBlockKey(tomb.id)) {
      throw new MalformedDeltaError(`A tombstone id is not one block key (${tomb.id.length} characters)`)
    }
  }

  return {
    elements: pb.elements.map(toElement),
    tombstones: pb.tombstones.map(toElement),
    priority: pb.priority > BigInt(MAX_PRIORITY) ? MAX_PRIORITY : Number(pb.priority),
    dagName: canonicalDagName(pb.dagName)
  }
}

function toElement (e: PBElement): DeltaElement {
  return { key: e.key, id: e.id, value: e.value ?? EMPTY }
}

const textEncoder = new TextEncoder()

function lengthDelimited (n: number): number {
  return encodingLength(n) + n
}

/**
 * The encoded size of one element as a repeated field of a delta, without
 * encoding it. Used to keep batches under `maxBatchDeltaSize`.
 */
export function elementSize (key: string, id: string, value: Uint8Array): number {
  let inner = 0
  if (key.length > 0) inner += 1 + lengthDelimited(textEncoder.encode(key).byteLength)
  if (id.length > 0) inner += 1 + lengthDelimited(textEncoder.encode(id).byteLength)
  if (value.byteLength > 0) inner += 1 + lengthDelimited(value.byteLength)
  return 1 + lengthDelimited(inner)
}
