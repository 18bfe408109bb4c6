/**
 * Watches a pubsub topic for the mistake that fails silently: peers are
 * connected over pubsub but none subscribes to our topic (a mistyped topic
 * name), so nothing replicates. After two checks in a row find it so, it
 * logs one error line; it logs again only after subscribers appeared and
 * vanished again. Pubsub services without `getPeers`/`getSubscribers` are
 * not watched. The timer runs between `start()` and `stop()` only.
 */

import { repeatingTask } from '@libp2p/utils'
import type { Logger } from '@libp2p/interface'
import type { RepeatingTask } from '@libp2p/utils'

/** The parts of a pubsub service the watch reads */
export interface WatchedPubSub {
  getPeers?(): unknown[]
  getSubscribers?(topic: string): unknown[]
}

export const DEFAULT_TOPIC_CHECK_INTERVAL = 5_000

export class TopicWatch {
  private readonly pubsub: WatchedPubSub
  private readonly topic: string
  private readonly log: Logger
  private readonly interval: number
  private task?: RepeatingTask
  private lonely = 0

  constructor (pubsub: WatchedPubSub, topic: string, log: Logger, interval = DEFAULT_TOPIC_CHECK_INTERVAL) {
    this.pubsub = pubsub
    this.topic = topic
    this.log = log
    this.interval = interval
  }

  start (): void {
    if (this.task != null || typeof this.pubsub.getPeers !== 'function' || typeof this.pubsub.getSubscribers !== 'function') return
    this.task = repeatingTask(() => { this.check() }, this.interval)
    this.task.start()
  }

  stop (): void {
    this.task?.stop()
    this.task = undefined
    this.lonely = 0
  }

  /** One check: counts checks in a row with pubsub peers but no subscriber on the topic */
  check (): void {
    const peers = this.pubsub.getPeers?.().length ?? 0
    const subscribers = this.pubsub.getSubscribers?.(this.topic).length ?? 0
    if (peers === 0 || subscribers > 0) {
      this.lonely = 0
      return
    }
    this.lonely++
    if (this.lonely === 2) {
      this.log.error('connected to %d pubsub peers, but none subscribes to topic "%s": nothing replicates. Do all replicas use the same topic?', peers, this.topic)
    }
  }
}
