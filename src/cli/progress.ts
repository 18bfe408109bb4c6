/**
 * Sync progress for the shell: counts merged remote nodes and, while a
 * catch-up is running, redraws one status line on a terminal; when the
 * replica has nothing left to fetch it prints a one-line "in sync" notice.
 */

import type { HeliaCRDTDatastore } from '../index.js'

export interface ProgressInit {
  /** Where status lines go (stderr) */
  write(text: string): void
  /** Redraw in place (a terminal) or print plain lines */
  tty: boolean
  /** Poll interval, ms */
  interval?: number
}

export class SyncProgress {
  private readonly store: HeliaCRDTDatastore
  private readonly init: ProgressInit
  private timer?: ReturnType<typeof setInterval>
  private merged = 0
  private syncing = false
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
    if (!busy && !this.syncing) {
      // idle: the next catch-up counts from here
      this.mergedAtStart = this.merged
      this.startedAt = Date.now()
      return
    }
    if (busy && !this.syncing) {
      this.syncing = true
    }
    if (this.syncing && busy) {
      const done = this.merged - this.mergedAtStart
      const secs = (Date.now() - this.startedAt) / 1000
      const rate = secs > 0 ? Math.round(done / secs) : 0
      const line = `syncing: ${done} blocks merged, ${stats.queuedJobs} queued, height ${stats.maxHeight} (${rate} blocks/s)`
      if (this.init.tty) {
        this.init.write(`\r\x1b[2K${line}`)
        this.drawn = true
      }
    }
    if (this.syncing && !busy) {
      this.syncing = false
      this.clearLine()
      const secs = ((Date.now() - this.startedAt) / 1000).toFixed(1)
      this.init.write(`in sync: merged ${this.merged - this.mergedAtStart} blocks in ${secs} s, height ${stats.maxHeight}\n`)
    }
  }

  private clearLine (): void {
    if (this.drawn) {
      this.init.write('\r\x1b[2K')
      this.drawn = false
    }
  }
}
