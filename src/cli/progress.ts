/**
 * Sync progress for the shell: counts merged remote nodes and, while a
 * catch-up is running, redraws one status line on a terminal; when the
 * replica has nothing left to fetch it prints a one-line "in sync" notice,
 * also after a catch-up too short to be seen running, then lets the shell
 * redraw its prompt.
 *
 * Invariants: only a catch-up that merged something shows anything (a
 * re-announcement of heads we have queues a job too, and must not write
 * over the prompt every rebroadcast); a catch-up's duration counts from the
 * last idle poll, or from `start()` for the first one.
 */

import type { HeliaCRDTDatastore } from '../helia/index.js'

export interface ProgressInit {
  /** Where status lines go (stderr) */
  write(text: string): void
  /** Redraw in place (a terminal) or print plain lines */
  tty: boolean
  /** Poll interval, ms */
  interval?: number
  /** Called after a notice line (such as "in sync") was written, to redraw the prompt */
  onNotice?(): void
}

export class SyncProgress {
  private readonly store: HeliaCRDTDatastore
  private readonly init: ProgressInit
  private timer?: ReturnType<typeof setInterval>
  private merged = 0
  private startedAt = 0
  private mergedAtStart = 0
  private drawn = false
  private readonly onProcessed = (evt: CustomEvent<{ local: boolean }>): void => {
    if (!evt.detail.local) this.merged++
  }

  constructor (store: HeliaCRDTDatastore, init: ProgressInit) {
    this.store = store
    this.init = init
  }

  start (): void {
    this.startedAt = Date.now()
    this.mergedAtStart = this.merged
    this.store.addEventListener('processed', this.onProcessed)
    this.timer = setInterval(() => { void this.tick() }, this.init.interval ?? 250)
  }

  stop (): void {
    clearInterval(this.timer)
    this.store.removeEventListener('processed', this.onProcessed)
    this.clearLine()
  }

  private async tick (): Promise<void> {
    const stats = this.store.stats()
    const busy = stats.queuedJobs > 0
    const done = this.merged - this.mergedAtStart
    if (!busy) {
      // a catch-up shorter than one poll is never seen busy: the merged count shows it happened
      if (done > 0) {
        this.clearLine()
        const secs = ((Date.now() - this.startedAt) / 1000).toFixed(1)
        this.init.write(`in sync: merged ${done} blocks in ${secs} s, height ${stats.maxHeight}\n`)
        this.init.onNotice?.()
      }
      // idle: the next catch-up counts from here
      this.mergedAtStart = this.merged
      this.startedAt = Date.now()
      return
    }
    const secs = (Date.now() - this.startedAt) / 1000
    const rate = secs > 0 ? Math.round(done / secs) : 0
    if (this.init.tty && done > 0) {
      this.init.write(`\r\x1b[2Ksyncing: ${done} blocks merged, ${stats.queuedJobs} queued, height ${stats.maxHeight} (${rate} blocks/s)`)
      this.drawn = true
    }
  }

  private clearLine (): void {
    if (this.drawn) {
      this.init.write('\r\x1b[2K')
      this.drawn = false
    }
  }
}
