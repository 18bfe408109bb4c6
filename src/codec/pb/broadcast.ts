import { decodeMessage, encodeMessage, MaxLengthError, message, streamMessage } from 'protons-runtime'
import { alloc as uint8ArrayAlloc } from 'uint8arrays/alloc'
import type { Codec, DecodeOptions } from 'protons-runtime'
import type { Uint8ArrayList } from 'uint8arraylist'

export interface CRDTBroadcast {
  Heads: Head[]
  Signature?: WriterSignature
}

export namespace CRDTBroadcast {
  let _codec: Codec<CRDTBroadcast>

  export const codec = (): Codec<CRDTBroadcast> => {
    if (_codec == null) {
      _codec = message<CRDTBroadcast>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if (obj.Heads != null && obj.Heads.length > 0) {
          for (const value of obj.Heads) {
            w.uint32(10)
            Head.codec().encode(value, w)
          }
        }

        if (obj.Signature != null) {
          w.uint32(882)
          WriterSignature.codec().encode(obj.Signature, w)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          Heads: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.Heads != null && obj.Heads.length === opts.limits.Heads) {
                throw new MaxLengthError('Decode error - repeated field "Heads" had too many elements')
              }

              obj.Heads.push(Head.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.Heads$
              }))
              break
            }
            case 110: {
              obj.Signature = WriterSignature.codec().decode(reader, reader.uint32(), {
                limits: opts.limits?.Signature
              })
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
          Heads: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              if (opts.limits?.Heads != null && obj.Heads === opts.limits.Heads) {
                throw new MaxLengthError('Streaming decode error - repeated field "Heads" had too many elements')
              }

              for (const evt of Head.codec().stream(reader, reader.uint32(), `${prefix}.Heads[]`, {
                limits: opts.limits?.Heads$
              })) {
                yield {
                  ...evt,
                  index: obj.Heads
                }
              }

              obj.Heads++

              break
            }
            case 110: {
              yield * WriterSignature.codec().stream(reader, reader.uint32(), `${prefix}.Signature`, {
                limits: opts.limits?.Signature
              })

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

  export interface CRDTBroadcastHeadsCidFieldEvent {
    field: '$.Heads[].Cid'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface CRDTBroadcastHeadsDagNameFieldEvent {
    field: '$.Heads[].DagName'
    value: string
    index: number
  }

  export interface CRDTBroadcastHeadsBlockFieldEvent {
    field: '$.Heads[].Block'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface CRDTBroadcastHeadsSnapshotFieldEvent {
    field: '$.Heads[].Snapshot'
    value: Uint8Array<ArrayBuffer>
    index: number
  }

  export interface CRDTBroadcastHeadsBelowFieldEvent {
    field: '$.Heads[].Below[]'
    index: number
    value: Uint8Array<ArrayBuffer>
  }

  export interface CRDTBroadcastSignaturePublicKeyFieldEvent {
    field: '$.Signature.PublicKey'
    value: Uint8Array<ArrayBuffer>
  }

  export interface CRDTBroadcastSignatureSignatureFieldEvent {
    field: '$.Signature.Signature'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<CRDTBroadcast>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, CRDTBroadcast.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<CRDTBroadcast>): CRDTBroadcast {
    return decodeMessage(buf, CRDTBroadcast.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<CRDTBroadcast>): Generator<CRDTBroadcastHeadsCidFieldEvent | CRDTBroadcastHeadsDagNameFieldEvent | CRDTBroadcastHeadsBlockFieldEvent | CRDTBroadcastHeadsSnapshotFieldEvent | CRDTBroadcastHeadsBelowFieldEvent | CRDTBroadcastSignaturePublicKeyFieldEvent | CRDTBroadcastSignatureSignatureFieldEvent> {
    return streamMessage(buf, CRDTBroadcast.codec(), opts)
  }
}

export interface Head {
  Cid: Uint8Array<ArrayBuffer>
  DagName: string
  Block?: Uint8Array<ArrayBuffer>
  Snapshot?: Uint8Array<ArrayBuffer>
  Below: Uint8Array<ArrayBuffer>[]
}

export namespace Head {
  let _codec: Codec<Head>

  export const codec = (): Codec<Head> => {
    if (_codec == null) {
      _codec = message<Head>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.Cid != null && obj.Cid.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.Cid)
        }

        if ((obj.DagName != null && obj.DagName !== '')) {
          w.uint32(18)
          w.string(obj.DagName)
        }

        if (obj.Block != null) {
          w.uint32(802)
          w.bytes(obj.Block)
        }

        if (obj.Snapshot != null) {
          w.uint32(810)
          w.bytes(obj.Snapshot)
        }

        if (obj.Below != null && obj.Below.length > 0) {
          for (const value of obj.Below) {
            w.uint32(818)
            w.bytes(value)
          }
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          Cid: uint8ArrayAlloc(0),
          DagName: '',
          Below: []
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.Cid = reader.bytes()
              break
            }
            case 2: {
              obj.DagName = reader.string()
              break
            }
            case 100: {
              obj.Block = reader.bytes()
              break
            }
            case 101: {
              obj.Snapshot = reader.bytes()
              break
            }
            case 102: {
              if (opts.limits?.Below != null && obj.Below.length === opts.limits.Below) {
                throw new MaxLengthError('Decode error - repeated field "Below" had too many elements')
              }

              obj.Below.push(reader.bytes())
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
          Below: 0
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              yield {
                field: `${prefix}.Cid`,
                value: reader.bytes()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.DagName`,
                value: reader.string()
              }
              break
            }
            case 100: {
              yield {
                field: `${prefix}.Block`,
                value: reader.bytes()
              }
              break
            }
            case 101: {
              yield {
                field: `${prefix}.Snapshot`,
                value: reader.bytes()
              }
              break
            }
            case 102: {
              if (opts.limits?.Below != null && obj.Below === opts.limits.Below) {
                throw new MaxLengthError('Streaming decode error - repeated field "Below" had too many elements')
              }

              yield {
                field: `${prefix}.Below[]`,
                index: obj.Below,
                value: reader.bytes()
              }

              obj.Below++

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

  export interface HeadCidFieldEvent {
    field: '$.Cid'
    value: Uint8Array<ArrayBuffer>
  }

  export interface HeadDagNameFieldEvent {
    field: '$.DagName'
    value: string
  }

  export interface HeadBlockFieldEvent {
    field: '$.Block'
    value: Uint8Array<ArrayBuffer>
  }

  export interface HeadSnapshotFieldEvent {
    field: '$.Snapshot'
    value: Uint8Array<ArrayBuffer>
  }

  export interface HeadBelowFieldEvent {
    field: '$.Below[]'
    index: number
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<Head>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, Head.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Head>): Head {
    return decodeMessage(buf, Head.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<Head>): Generator<HeadCidFieldEvent | HeadDagNameFieldEvent | HeadBlockFieldEvent | HeadSnapshotFieldEvent | HeadBelowFieldEvent> {
    return streamMessage(buf, Head.codec(), opts)
  }
}

export interface WriterSignature {
  PublicKey: Uint8Array<ArrayBuffer>
  Signature: Uint8Array<ArrayBuffer>
}

export namespace WriterSignature {
  let _codec: Codec<WriterSignature>

  export const codec = (): Codec<WriterSignature> => {
    if (_codec == null) {
      _codec = message<WriterSignature>((obj, w, opts = {}) => {
        if (opts.lengthDelimited !== false) {
          w.fork()
        }

        if ((obj.PublicKey != null && obj.PublicKey.byteLength > 0)) {
          w.uint32(10)
          w.bytes(obj.PublicKey)
        }

        if ((obj.Signature != null && obj.Signature.byteLength > 0)) {
          w.uint32(18)
          w.bytes(obj.Signature)
        }

        if (opts.lengthDelimited !== false) {
          w.ldelim()
        }
      }, (reader, length, opts = {}) => {
        const obj: any = {
          PublicKey: uint8ArrayAlloc(0),
          Signature: uint8ArrayAlloc(0)
        }

        const end = length == null ? reader.len : reader.pos + length

        while (reader.pos < end) {
          const tag = reader.uint32()

          switch (tag >>> 3) {
            case 1: {
              obj.PublicKey = reader.bytes()
              break
            }
            case 2: {
              obj.Signature = reader.bytes()
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
                field: `${prefix}.PublicKey`,
                value: reader.bytes()
              }
              break
            }
            case 2: {
              yield {
                field: `${prefix}.Signature`,
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

  export interface WriterSignaturePublicKeyFieldEvent {
    field: '$.PublicKey'
    value: Uint8Array<ArrayBuffer>
  }

  export interface WriterSignatureSignatureFieldEvent {
    field: '$.Signature'
    value: Uint8Array<ArrayBuffer>
  }

  export function encode (obj: Partial<WriterSignature>): Uint8Array<ArrayBuffer> {
    return encodeMessage(obj, WriterSignature.codec())
  }

  export function decode (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<WriterSignature>): WriterSignature {
    return decodeMessage(buf, WriterSignature.codec(), opts)
  }

  export function stream (buf: Uint8Array | Uint8ArrayList, opts?: DecodeOptions<WriterSignature>): Generator<WriterSignaturePublicKeyFieldEvent | WriterSignatureSignatureFieldEvent> {
    return streamMessage(buf, WriterSignature.codec(), opts)
  }
}
