/**
 * Deltas: the payload of every DAG node, encoded exactly as go-ds-crdt
 * encodes them (proto3 `crdt.pb.Delta`).
 */

import { Delta as PBDelta } from './pb/delta.js'
import { MalformedDeltaError } from './errors.js'
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
 * Priorities above this are refused: no honest replica reaches them and they
 * cannot be represented exactly in a JS number. One below
 * `Number.MAX_SAFE_INTEGER`, so the store can still encode `priority + 1`
 * for any priority it accepts.
 */
export const MAX_PRIORITY = Number.MAX_SAFE_INTEGER - 1

const EMPTY = new Uint8Array(0)

/**
 * Serialises a delta into go-ds-crdt's protobuf bytes. Throws
 * `MalformedDeltaError` for a priority over `MAX_PRIORITY`, which every
 * replica would refuse: a write on top of a node that claims an absurd
 * priority fails instead of being silently dropped by every other replica.
 */
export function encodeDelta (delta: Delta): Uint8Array {
  if (!(delta.priority >= 0 && delta.priority <= MAX_PRIORITY)) {
    throw new MalformedDeltaError(`Delta priority ${delta.priority} is out of range: the DAG links a node claiming a priority no honest replica reaches`)
  }
  return PBDelta.encode({
    elements: delta.elements as PBElement[],
    tombstones: delta.tombstones as PBElement[],
    priority: BigInt(delta.priority),
    dagName: delta.dagName
  })
}

/** Parses go-ds-crdt protobuf delta bytes, throwing `MalformedDeltaError` on bad input */
export function decodeDelta (bytes: Uint8Array): Delta {
  let pb: PBDelta
  try {
    pb = PBDelta.decode(bytes)
  } catch (err: any) {
    throw new MalformedDeltaError(`Delta does not decode: ${err.message}`)
  }

  if (pb.priority > BigInt(MAX_PRIORITY)) {
    throw new MalformedDeltaError(`Delta priority ${pb.priority} is out of range`)
  }

  return {
    elements: pb.elements.map(toElement),
    tombstones: pb.tombstones.map(toElement),
    priority: Number(pb.priority),
    dagName: pb.dagName
  }
}

function toElement (e: PBElement): DeltaElement {
  return { key: e.key, id: e.id, value: e.value ?? EMPTY }
}

const textEncoder = new TextEncoder()

function varintLength (n: number): number {
  let len = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    len++
  }
  return len
}

function lengthDelimited (n: number): number {
  return varintLength(n) + n
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
