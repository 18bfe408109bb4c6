/**
 * Sync progress for the shell, driven by the store's `sync:progress` events
 * (no polling): while a catch-up runs it redraws one status line on a
 * terminal (nodes and bytes merged, known frontier left, height, rate), at
 * most once per `interval`; when the frontier reaches 0 after remote nodes
 * were merged it prints a one-line "in sync" notice — also after a catch-up
 * too short to be drawn — then lets the shell redraw its prompt.
 *
 * Invariants: it holds no timer; `stop()` removes its one listener; only a
 * catch-up that merged something shows anything (a re-announcement of heads
 * we have reports progress too, and must not write over the prompt every
 * rebroadcast); a catch-up too short to be drawn counts its time from the
 * last idle moment, or from `start()` for the first one.
 */

import type { SyncProgressDetail } from '../interfaces.js'

export interface ProgressInit {
  /** Where status lines go (stderr) */
  write(text: string): void
  /** Redraw in place (a terminal) or print plain lines */
  tty: boolean
  /**
   * Least time (ms) between two redraws of the status line
   *
   * @default 250
   */
  interval?: number
  /** Called after a notice line (such as "in sync") was written, to redraw the prompt */
  onNotice?(): void
}

export const DEFAULT_PROGRESS_INTERVAL = 250

/** The part of a store the counter needs: its `sync:progress` event */
export interface ProgressSource {
  addEventListener(type: 'sync:progress', listener: (evt: CustomEvent<SyncProgressDetail>) => void): void
  removeEventListener(type: 'sync:progress', listener: (evt: CustomEvent<SyncProgressDetail>) => void): void
}

export class SyncProgress {
  private readonly store: ProgressSource
  private readonly init: ProgressInit
  private readonly interval: number
  private syncing = false
  private startedAt = 0
  private mergedAtStart = 0
  private bytesAtStart = 0
  private drawnAt = 0
  private drawn = false
  private readonly onProgress = (evt: CustomEvent<SyncProgressDetail>): void => { this.update(evt.detail) }

  constructor (store: ProgressSource, init: ProgressInit) {
    this.store = store
    this.init = init
    this.interval = init.interval ?? DEFAULT_PROGRESS_INTERVAL
  }

  start (): void {
    this.startedAt = Date.now()
    this.store.addEventListener('sync:progress', this.onProgress)
  }

  stop (): void {
    this.store.removeEventListener('sync:progress', this.onProgress)
    this.clearLine()
  }

  private update (progress: SyncProgressDetail): void {
    const done = progress.nodesMerged - this.mergedAtStart
    if (progress.frontier === 0) {
      if (done > 0) {
        this.clearLine()
        const secs = ((Date.now() - this.startedAt) / 1000).toFixed(1)
        this.init.write(`in sync: merged ${done} blocks (${kb(progress.bytesMerged - this.bytesAtStart)}) in ${secs} s, height ${progress.maxHeight}\n`)
        this.init.onNotice?.()
      }
      // idle: the next catch-up counts from here
      this.syncing = false
      this.startedAt = Date.now()
      this.mergedAtStart = progress.nodesMerged
      this.bytesAtStart = progress.bytesMerged
      return
    }
    const now = Date.now()
    if (!this.syncing) {
      this.syncing = true
      this.startedAt = now
      this.drawnAt = 0
    }
    if (!this.init.tty || done === 0 || now - this.drawnAt < this.interval) return
    this.drawnAt = now
    const secs = (now - this.startedAt) / 1000
    const rate = secs > 0 ? Math.round(done / secs) : 0
    this.init.write(`\r\x1b[2Ksyncing: ${done} blocks merged (${kb(progress.bytesMerged - this.bytesAtStart)}), ${progress.frontier} left, height ${progress.maxHeight} (${rate} blocks/s)`)
    this.drawn = true
  }

  private clearLine (): void {
    if (this.drawn) {
      this.init.write('\r\x1b[2K')
      this.drawn = false
    }
  }
}

function kb (bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KB`
}
