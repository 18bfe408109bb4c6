import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface Delta {
  elements: Element[]
  tombstones: Element[]
  priority: bigint
  dagName: string
}

export namespace Delta {
  let _codec: Codec<Delta>

  export const codec = (): Codec<Delta> => {
    if (_codec == null) {
      _codec = message<Delta>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.elements != null && obj.elements.length > 0) {
          for (const value of obj.elements) {
            w.uint32(10)
            Element.codec().encode(value, w)
          }
        }

        if (obj.tombstones != null && obj.tombstones.length > 0) {
          for (const value of obj.tombstones) {
            w.uint32(18)
            Element.codec().encode(value, w)
          }
        }

        if ((obj.priority != null && obj.priority !== 0n)) {
          w.uint32(24)
          w.uint64(obj.priority)
        }

        if ((obj.dagName != null && obj.dagName !== '')) {
          w.uint32(34)
          w.string(obj.dagName)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          elements: [],
          tombstones: [],
          priority: 0n,
          dagName: ''
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.elements != null && obj.elements.length === opts.limits.elements) {
                throw new MaxLengthError('Decode error - repeated field "elements" had too many elements')
              }

              obj.elements.push(Element.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.elements$
              }))
              break
            }
            case 2: {
              if (opts.limits?.tombstones != null && obj.tombstones.length === opts.limits.tombstones) {
                throw new MaxLengthError('Decode error - repeated field "tombstones" had too many elements')
              }

              obj.tombstones.push(Element.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.tombstones$
              }))
              break
            }
            case 3: {
              obj.priority = reader.uint64()
              break
            }
            case 4: {
              obj.dagName = reader.string()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const obj = {
          elements: 0,
          tombstones: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.elements != null && obj.elements === opts.limits.elements) {
                throw new MaxLengthError('Streaming decode error - repeated field "elements" had too many elements')
              }

              for (const evt of Element.codec().stream(reader, reader.uint32(), `${prefix}.elements[]`, {
                limits: opts.limits?.elements$
              })) {
                yield {
                  ...evt,
                  index: obj.elements
                }
              }

              obj.elements++

              break
            }
            case 2: {
              if (opts.limits?.tombstones != null && obj.tombstones === opts.limits.tombstones) {
                throw new MaxLengthError('Streaming decode error - repeated field "tombstones" had too many elements')
              }

              for (const evt of Element.codec().stream(reader, reader.uint32(), `${prefix}.tombstones[]`, {
                limits: opts.limits?.tombstones$
              })) {
                yield {
                  ...evt,
                  index: obj.tombstones
                }
              }

              obj.tombstones++

              break
            }
            case 3: {
              yield {
                field: `${prefix}.priority`,
                value: reader.uint64()
              }
              break
            }
            case 4: {
              yield {
                field: `${prefix}.dagName`,
                value: reader.string()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface DeltaElementsKeyFieldEvent {
    field: '$.elements[].key'
    value: string
    index: number
  }

  export interface DeltaElementsIdFieldEvent {
    field: '$.elements[].id'
    value: string
    index: number
  }

  export interface DeltaElementsValueFieldEvent {
    field: '$.elements[].value'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface DeltaTombstonesKeyFieldEvent {
    field: '$.tombstones[].key'
    value: string
    index: number
  }

  export interface DeltaTombstonesIdFieldEvent {
    field: '$.tombstones[].id'
    value: string
    index: number
  }

  export interface DeltaTombstonesValueFieldEvent {
    field: '$.tombstones[].value'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface DeltaPriorityFieldEvent {
    field: '$.priority'
    value: bigint
  }

  export interface DeltaDagNameFieldEvent {
    field: '$.dagName'
    value: string
  }

  export function encode (obj: Partial<Delta>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Delta.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Delta>): Delta {
    return decodeMessage(buf, Delta.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Delta>): Generator<DeltaElementsKeyFieldEvent | DeltaElementsIdFieldEvent | DeltaElementsValueFieldEvent | DeltaTombstonesKeyFieldEvent | DeltaTombstonesIdFieldEvent | DeltaTombstonesValueFieldEvent | DeltaPriorityFieldEvent | DeltaDagNameFieldEvent> {
    return streamMessage(buf, Delta.codec(), opts)
  }
}

export interface Element {
  key: string
  id: string
  value: Uint8Array<ArrayBuffer>
}

export namespace Element {
  let _codec: Codec<Element>

  export const codec = (): Codec<Element> => {
    if (_codec == null) {
      _codec = message<Element>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.key != null && obj.key !== '')) {
          w.uint32(10)
          w.string(obj.key)
        }

        if ((obj.id != null && obj.id !== '')) {
          w.uint32(18)
          w.string(obj.id)
        }

        if ((obj.value != null && obj.value.byteLength > 0)) {
          w.uint32(26)
          w.bytes(obj.value)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          key: '',
          id: '',
          value: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.key = reader.string()
              break
            }
            case 2: {
              obj.id = reader.string()
              break
            }
            case 3: {
              obj.value = reader.bytes()
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }

        return obj
      }, function * (reader, length, prefix, opts = {}) {
        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.key`,
                value: reader.string()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.id`,
                value: reader.string()
              }
              break
            }
            case 3: {
              yield {
                field: `${prefix}.value`,
                value: reader.bytes()
              }
              break
            }
            default: {
              reader.skipType(tag & 7)
              break
            }
          }
        }
      })
    }

    return _codec
  }

  export interface ElementKeyFieldEvent {
    field: '$.key'
    value: string
  }

  export interface ElementIdFieldEvent {
    field: '$.id'
    value: string
  }

  export interface ElementValueFieldEvent {
    field: '$.value'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Element>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Element.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Element>): Element {
    return decodeMessage(buf, Element.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Element>): Generator<ElementKeyFieldEvent | ElementIdFieldEvent | ElementValueFieldEvent> {
    return streamMessage(buf, Element.codec(), opts)
  }
}
