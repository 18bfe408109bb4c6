/**
 * A Broadcaster over libp2p pubsub (gossipsub). It depends on a minimal
 * structural PubSub interface rather than on a pubsub package, so any
 * implementation with subscribe/publish/'message' events fits.
 *
 * Its topic validator decodes each payload once (size-capped before any
 * parsing) and rejects what is not a broadcast, so junk is not forwarded;
 * the decoded heads travel with the payload to the replicator, which does
 * not decode it again. Received payloads are queued bounded by count and by
 * bytes, with the announcing peer when the message is signed.
 */

import { defaultLogger } from '@libp2p/logger'
import { AbortError } from 'abort-error'
import { decodeBroadcastPayload, MAX_BROADCAST_SIZE } from '../codec/broadcast.js'
import { DEFAULT_MAX_QUEUED_BYTES, PayloadQueue } from '../engine/payload-queue.js'
import { InvalidOptionsError } from '../errors.js'
import type { DecodedBroadcast } from '../codec/broadcast.js'
import type { ReceivedPayload } from '../engine/payload-queue.js'
import type { Broadcaster } from '../interfaces.js'
import type { ComponentLogger, Logger } from '@libp2p/interface'
import type { AbortOptions } from 'interface-store'

/** A message as pubsub implementations deliver it */
export interface PubSubMessage {
  topic: string
  data: Uint8Array
  /** The author of a signed message */
  from?: { toString(): string }
}

/** Verdict of a topic validator; gossipsub's TopicValidatorResult values */
export type ValidatorResult = 'accept' | 'ignore' | 'reject'

/**
 * A topic validator. It returns a `ValidatorResult` string; the return type
 * is left open so gossipsub's `TopicValidatorFn` (an enum of the same
 * strings) fits
 */
export type TopicValidator = (peer: any, message: PubSubMessage) => any

/** The part of a pubsub service's `topicValidators` map the broadcaster uses */
export interface TopicValidators {
  get(topic: string): unknown
  set(topic: string, validator: TopicValidator): unknown
  delete(topic: string): unknown
}

/** A `subscription-change` event as gossipsub emits it: a peer's (un)subscriptions, sent when it connects and when they change */
interface SubscriptionChange {
  peerId?: { toString(): string }
  subscriptions?: Array<{ topic: string, subscribe: boolean }>
}

/** The part of a libp2p pubsub service the broadcaster uses */
export interface PubSub {
  subscribe(topic: string): void
  unsubscribe(topic: string): void
  publish(topic: string, data: Uint8Array): Promise<unknown>
  addEventListener(type: 'message', listener: (evt: CustomEvent<PubSubMessage>) => void): void
  removeEventListener(type: 'message', listener: (evt: CustomEvent<PubSubMessage>) => void): void
  /** When present, payloads that are not broadcasts are rejected before they are forwarded */
  topicValidators?: TopicValidators
}

export interface PubSubBroadcasterComponents {
  pubsub: PubSub
  logger?: ComponentLogger
}

export interface PubSubBroadcasterInit {
  /** The topic every replica of one store shares */
  topic: string
  /**
   * Payloads kept while nobody calls `next()`; older ones are dropped first
   * (heads are rebroadcast, so dropping only delays sync)
   *
   * @default 1024
   */
  maxQueued?: number
  /**
   * Bytes of payloads kept while nobody calls `next()`; older ones are
   * dropped first
   *
   * @default 16_777_216
   */
  maxQueuedBytes?: number
  /**
   * Install a topic validator that rejects payloads that are not broadcasts
   *
   * @default true
   */
  validate?: boolean
  /**
   * A further check run by the topic validator on payloads that decode:
   * those it refuses are rejected (not delivered, not forwarded). Trusted
   * mode passes the store's `admitsBroadcast`, so payloads not signed by a
   * current writer stop at the first replica
   */
  admit?(data: Uint8Array): boolean | Promise<boolean>
}

export const DEFAULT_MAX_QUEUED = 1024
export const DEFAULT_VALIDATE = true
export { DEFAULT_MAX_QUEUED_BYTES }

/** A Broadcaster that also unsubscribes when stopped */
export interface PubSubBroadcaster extends Broadcaster {
  readonly topic: string
  /** Payloads dropped because the receive buffer was full */
  readonly dropped: number
  /** Payloads the topic validator rejected because `admit` refused them (trusted mode) */
  readonly refused?: number
  /** Unsubscribes and rejects pending `next()` calls */
  stop(): Promise<void>
}

class GossipBroadcaster implements PubSubBroadcaster {
  public readonly topic: string
  private readonly pubsub: PubSub
  private readonly log: Logger
  private readonly queue: PayloadQueue
  private readonly validator?: TopicValidator
  /** What the validator decoded (heads and carried blocks), by the message's data, until the message is delivered */
  private readonly decoded = new WeakMap<Uint8Array, DecodedBroadcast>()
  private stopped = false
  /** Payloads the `admit` check refused in the validator */
  public refused = 0

  constructor (components: PubSubBroadcasterComponents, init: PubSubBroadcasterInit) {
    this.pubsub = components.pubsub
    this.topic = init.topic
    this.queue = new PayloadQueue(init.maxQueued ?? DEFAULT_MAX_QUEUED, init.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES)
    this.log = (components.logger ?? defaultLogger()).forComponent('datastore-crdt:pubsub-broadcaster')
    if ((init.validate ?? DEFAULT_VALIDATE) && this.pubsub.topicValidators != null) {
      const decode = (message: PubSubMessage): boolean => {
        if (message.data.byteLength > MAX_BROADCAST_SIZE) return false
        try {
          // decoded once, here: the replicator takes the heads and carried blocks as they are
          this.decoded.set(message.data, decodeBroadcastPayload(message.data))
          return true
        } catch {
          return false
        }
      }
      const admit = init.admit
      this.validator = admit == null
        ? (_peer, message) => decode(message) ? 'accept' : 'reject'
        : async (_peer, message) => {
          if (!decode(message)) return 'reject'
          if (await admit(message.data)) return 'accept'
          this.decoded.delete(message.data)
          this.refused++
          return 'reject'
        }
      this.pubsub.topicValidators.set(this.topic, this.validator)
    }
    this.pubsub.addEventListener('message', this.onMessage)
    this.pubsub.subscribe(this.topic)
  }

  get dropped (): number {
    return this.queue.dropped
  }

  private readonly onMessage = (evt: CustomEvent<PubSubMessage>): void => {
    const { topic, data, from } = evt.detail
    if (topic !== this.topic || this.stopped) return
    const decoded = this.decoded.get(data)
    this.decoded.delete(data)
    this.queue.push(data, { from: from?.toString(), heads: decoded?.heads, blocks: decoded?.blocks })
  }

  async broadcast (data: Uint8Array, options?: AbortOptions): Promise<void> {
    options?.signal?.throwIfAborted()
    if (this.stopped) throw new AbortError('The broadcaster has been stopped')
    try {
      await this.pubsub.publish(this.topic, data)
    } catch (err: any) {
      if (String(err?.message ?? err).includes('NoPeersSubscribedToTopic') || err?.name === 'NoPeersSubscribedToTopic') {
        // nobody to tell yet: the heads will be rebroadcast
        this.log('no peers subscribed to %s yet', this.topic)
        return
      }
      throw err
    }
  }

  /** Peers that subscribe to the topic (gossipsub's `subscription-change` events), while not stopped */
  watchJoins (listener: (peer: string) => void): () => void {
    const target = this.pubsub as unknown as {
      addEventListener?(type: 'subscription-change', fn: (evt: CustomEvent<SubscriptionChange>) => void): void
      removeEventListener?(type: 'subscription-change', fn: (evt: CustomEvent<SubscriptionChange>) => void): void
    }
    const onChange = (evt: CustomEvent<SubscriptionChange>): void => {
      const { peerId, subscriptions } = evt.detail ?? {}
      if (this.stopped || peerId == null || subscriptions?.some(s => s.topic === this.topic && s.subscribe) !== true) return
      listener(peerId.toString())
    }
    target.addEventListener?.('subscription-change', onChange)
    return () => { target.removeEventListener?.('subscription-change', onChange) }
  }

  async next (options?: AbortOptions): Promise<Uint8Array> {
    return this.queue.next(options)
  }

  async nextPayload (options?: AbortOptions): Promise<ReceivedPayload> {
    return this.queue.nextPayload(options)
  }

  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.pubsub.removeEventListener('message', this.onMessage)
    if (this.validator != null && this.pubsub.topicValidators?.get(this.topic) === this.validator) {
      this.pubsub.topicValidators.delete(this.topic)
    }
    try {
      this.pubsub.unsubscribe(this.topic)
    } catch (err: any) {
      this.log('unsubscribe failed - %e', err)
    }
    this.queue.close()
  }
}

/**
 * Creates a Broadcaster that announces heads on a pubsub topic. Publishing
 * while no peer is subscribed is not an error.
 *
 * @example
 * ```ts
 * import { pubsubBroadcaster } from 'datastore-crdt'
 *
 * const broadcaster = pubsubBroadcaster({ pubsub: libp2p.services.pubsub }, { topic: 'my-app' })
 * const store = await createCRDTDatastore({ datastore, blockstore, broadcaster })
 * // …
 * await store.stop()
 * await broadcaster.stop()
 * ```
 */
export function pubsubBroadcaster (components: PubSubBroadcasterComponents, init: PubSubBroadcasterInit): PubSubBroadcaster {
  if (components?.pubsub == null || typeof components.pubsub.publish !== 'function' || typeof components.pubsub.subscribe !== 'function') {
    throw new InvalidOptionsError('components.pubsub must be a libp2p pubsub service (subscribe, publish, message events)')
  }
  if (typeof init?.topic !== 'string' || init.topic === '') {
    throw new InvalidOptionsError('init.topic must be a non-empty string')
  }
  if (init.maxQueued != null && (!Number.isInteger(init.maxQueued) || init.maxQueued < 1)) {
    throw new InvalidOptionsError('init.maxQueued must be an integer >= 1')
  }
  if (init.maxQueuedBytes != null && (!Number.isInteger(init.maxQueuedBytes) || init.maxQueuedBytes < 1)) {
    throw new InvalidOptionsError('init.maxQueuedBytes must be an integer >= 1')
  }
  return new GossipBroadcaster(components, init)
}
