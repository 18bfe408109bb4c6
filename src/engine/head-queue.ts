/**
 * The queue of announced heads waiting to be fetched and walked, fair
 * between announcers.
 *
 * Heads wait in one queue per announcer (a peer id, or '' when the
 * transport does not say), taken newest first: a writer's newer head
 * usually covers its older ones, and a peer that flooded bogus heads
 * before an honest one does not delay that one behind its flood. Free fetch
 * slots go round-robin over the announcers, so a
 * peer that announces a thousand heads gets one slot in turn like a peer
 * that announces one. Announcers whose heads keep failing (no block within
 * the head deadline, or a malformed one) are deprioritised: they are served
 * only when no other announcer waits, one head at a time, until one of
 * their heads succeeds. No announcer holds more than half the slots. The
 * unknown announcer ('', a transport that does not say) is never
 * deprioritised, since it may stand for every peer.
 *
 * Everything is bounded: heads queued per announcer and in all (the oldest
 * of the longest queue is dropped first; a dropped head comes back with the
 * writer's next rebroadcast), announcers remembered, and slots. A
 * deprioritised announcer keeps only its newest `MAX_WAITING_PENALISED`
 * heads waiting: a flood of heads nobody has would otherwise hold the
 * store busy for a head deadline each, one after another. A head already
 * queued or in flight is not queued twice; one waiting for a deprioritised
 * announcer that an announcer in good standing announces too moves to that
 * one's queue, so an honest head is not left behind a flood it was queued
 * with.
 */

import type { CID } from 'multiformats/cid'

/** How a head's turn ended */
export type HeadOutcome = 'ok' | 'failed' | 'skipped'

/** A head waiting for, or holding, a slot */
export interface QueuedHead {
  cid: CID
  /** The DAG name it was announced with */
  dagName: string
  announcer: string
  /** Adopt it as a head of its DAG even when the DAG has heads by then */
  adopt: boolean
}

export interface HeadQueueInit {
  /** Heads handled at once */
  slots: number
  /** Heads kept waiting per announcer */
  maxPerAnnouncer: number
  /** Heads kept waiting in all */
  maxQueued: number
  /** Failures in a row after which an announcer is deprioritised */
  penaltyThreshold: number
  /** Handles one head; settles when its turn is over */
  run(head: QueuedHead): Promise<HeadOutcome>
}

/** Announcers whose failures are remembered at most */
const MAX_REMEMBERED = 4096
/** Heads kept waiting for a deprioritised announcer, its newest; older ones are dropped */
export const MAX_WAITING_PENALISED = 16

interface Entry {
  head: QueuedHead
  done: Array<() => void>
}

interface Lane {
  waiting: Entry[]
  inFlight: number
}

export class HeadQueue {
  /** Heads dropped because a queue was full */
  public dropped = 0
  private readonly init: HeadQueueInit
  private readonly lanes = new Map<string, Lane>()
  /** Announcers in round-robin order; the first is served next */
  private order: string[] = []
  /** Queued and in-flight heads by CID string */
  private readonly entries = new Map<string, Entry>()
  /** Failures in a row, by announcer (oldest first, bounded) */
  private readonly failures = new Map<string, number>()
  private waitingCount = 0
  private inFlightCount = 0
  private closed = false

  constructor (init: HeadQueueInit) {
    this.init = init
  }

  /** Heads waiting for a slot */
  get waiting (): number {
    return this.waitingCount
  }

  /** Heads being fetched or walked */
  get inFlight (): number {
    return this.inFlightCount
  }

  /** Announcers currently deprioritised */
  get penalised (): number {
    let n = 0
    for (const count of this.failures.values()) if (count >= this.init.penaltyThreshold) n++
    return n
  }

  /**
   * Queues a head; resolves once its turn is over, it is dropped, or the
   * queue is closed. A head already queued or in flight resolves with it.
   */
  async add (head: QueuedHead): Promise<void> {
    if (this.closed) return
    const key = head.cid.toString()
    const known = this.entries.get(key)
    if (known != null) {
      known.head.adopt ||= head.adopt
      const settled = new Promise<void>(resolve => { known.done.push(resolve) })
      this.rehome(known, head.announcer)
      return settled
    }
    const entry: Entry = { head, done: [] }
    const settled = new Promise<void>(resolve => { entry.done.push(resolve) })
    const lane = this.lane(head.announcer)
    this.makeRoom(lane, head.announcer)
    if (this.waitingCount >= this.init.maxQueued) this.drop(this.longest())
    lane.waiting.push(entry)
    this.entries.set(key, entry)
    this.waitingCount++
    this.pump()
    return settled
  }

  /** The lane of `announcer`, made (last in the round) when it has none */
  private lane (announcer: string): Lane {
    let lane = this.lanes.get(announcer)
    if (lane == null) {
      lane = { waiting: [], inFlight: 0 }
      this.lanes.set(announcer, lane)
      this.order.push(announcer)
    }
    return lane
  }

  /** Heads `announcer` may keep waiting: fewer once it is deprioritised */
  private maxWaiting (announcer: string): number {
    return this.penalisedAnnouncer(announcer) ? Math.min(MAX_WAITING_PENALISED, this.init.maxPerAnnouncer) : this.init.maxPerAnnouncer
  }

  /** Drops the oldest heads of `announcer`'s lane until one more fits */
  private makeRoom (lane: Lane, announcer: string): void {
    const max = this.maxWaiting(announcer)
    while (lane.waiting.length >= max) this.drop(lane)
  }

  /**
   * A head waiting in a deprioritised announcer's lane, announced again by
   * an announcer in good standing, moves to the newest end of that one's
   * lane, and that one is asked for it first
   */
  private rehome (entry: Entry, announcer: string): void {
    const from = entry.head.announcer
    if (announcer === from || !this.penalisedAnnouncer(from) || this.penalisedAnnouncer(announcer)) return
    const old = this.lanes.get(from)
    const at = old?.waiting.indexOf(entry) ?? -1
    // in flight already
    if (old == null || at < 0) return
    old.waiting.splice(at, 1)
    this.retireIfIdle(from, old)
    entry.head.announcer = announcer
    const lane = this.lane(announcer)
    this.waitingCount--
    this.makeRoom(lane, announcer)
    lane.waiting.push(entry)
    this.waitingCount++
    this.pump()
  }

  /** Forgets a lane with nothing waiting or in flight */
  private retireIfIdle (announcer: string, lane: Lane): void {
    if (lane.inFlight !== 0 || lane.waiting.length !== 0) return
    this.lanes.delete(announcer)
    this.order = this.order.filter(a => a !== announcer)
  }

  /** Drops every waiting head (their promises resolve) and takes no more */
  close (): void {
    this.closed = true
    for (const lane of this.lanes.values()) {
      for (const entry of lane.waiting) this.settle(entry)
      lane.waiting = []
    }
    this.waitingCount = 0
  }

  /** Takes heads again after `close()` (a restarted store) */
  reopen (): void {
    this.closed = false
  }

  /** An unknown announcer ('') is never penalised: it may stand for everyone */
  private penalisedAnnouncer (announcer: string): boolean {
    return announcer !== '' && (this.failures.get(announcer) ?? 0) >= this.init.penaltyThreshold
  }

  /** Starts heads while slots are free */
  private pump (): void {
    while (!this.closed && this.inFlightCount < this.init.slots) {
      const entry = this.pick()
      if (entry == null) return
      this.start(entry)
    }
  }

  /** The next head: round-robin over announcers in good standing, else one deprioritised announcer's */
  private pick (): Entry | undefined {
    let fallback: string | undefined
    for (let i = 0; i < this.order.length; i++) {
      const announcer = this.order[i]
      const lane = this.lanes.get(announcer)
      if (lane == null || lane.waiting.length === 0) continue
      if (this.penalisedAnnouncer(announcer)) {
        if (lane.inFlight === 0) fallback ??= announcer
        continue
      }
      // one announcer holds at most half the slots, so a newcomer finds one free
      if (lane.inFlight >= Math.max(1, Math.ceil(this.init.slots / 2))) continue
      // served: to the back of the round
      this.order.splice(i, 1)
      this.order.push(announcer)
      return this.take(announcer)
    }
    return fallback == null ? undefined : this.take(fallback)
  }

  /** An announcer's newest head: a newer head of a writer usually covers its older ones */
  private take (announcer: string): Entry | undefined {
    const lane = this.lanes.get(announcer)
    const entry = lane?.waiting.pop()
    if (entry != null) this.waitingCount--
    return entry
  }

  private start (entry: Entry): void {
    const announcer = entry.head.announcer
    const lane = this.lanes.get(announcer)
    if (lane != null) lane.inFlight++
    this.inFlightCount++
    const finish = (outcome: HeadOutcome): void => {
      this.inFlightCount--
      if (lane != null) lane.inFlight--
      this.record(announcer, outcome)
      if (lane != null) this.retireIfIdle(announcer, lane)
      this.settle(entry)
      this.pump()
    }
    this.init.run(entry.head).then(finish, () => { finish('failed') })
  }

  private record (announcer: string, outcome: HeadOutcome): void {
    if (outcome === 'skipped' || announcer === '') return
    const before = this.failures.get(announcer) ?? 0
    this.failures.delete(announcer)
    if (outcome === 'ok') return
    // re-inserted: the most recent failures are kept longest
    this.failures.set(announcer, before + 1)
    // deprioritised now: only its newest heads keep waiting
    const lane = this.lanes.get(announcer)
    if (lane != null && before + 1 === this.init.penaltyThreshold) {
      const max = this.maxWaiting(announcer)
      while (lane.waiting.length > max) this.drop(lane)
    }
    if (this.failures.size > MAX_REMEMBERED) {
      const oldest = this.failures.keys().next().value
      if (oldest != null) this.failures.delete(oldest)
    }
  }

  private settle (entry: Entry): void {
    this.entries.delete(entry.head.cid.toString())
    for (const done of entry.done) done()
    entry.done = []
  }

  private drop (lane: Lane | undefined): void {
    const entry = lane?.waiting.shift()
    if (entry == null) return
    this.waitingCount--
    this.dropped++
    this.settle(entry)
  }

  private longest (): Lane | undefined {
    let best: Lane | undefined
    for (const lane of this.lanes.values()) {
      if (best == null || lane.waiting.length > best.waiting.length) best = lane
    }
    return best
  }
}
