/**
 * The CLI's live counter, unit-tested against a stand-in store that emits
 * `sync:progress` events by hand: the counter is driven by those events
 * alone (it has no timer and never reads stats()); test/progress.spec.ts
 * runs it on a real sync.
 */

import { expect } from 'aegir/chai'
import { TypedEventEmitter } from 'main-event'
import { SyncProgress } from '../src/cli/progress.js'
import type { SyncProgressDetail } from '../src/index.js'

class FakeStore extends TypedEventEmitter<{ 'sync:progress': CustomEvent<SyncProgressDetail> }> {
  progress (nodesMerged: number, frontier: number, maxHeight: number, bytesMerged = nodesMerged * 1024): void {
    this.safeDispatchEvent('sync:progress', { detail: { nodesMerged, bytesMerged, frontier, maxHeight } })
  }

  stats (): never {
    throw new Error('the counter must not poll stats()')
  }
}

describe('sync progress', () => {
  it('draws a live counter from sync:progress events while the frontier is not empty, then one "in sync" line', () => {
    const store = new FakeStore()
    let out = ''
    const progress = new SyncProgress(store, { write: t => { out += t }, tty: true, interval: 0 })
    progress.start()
    try {
      store.progress(3, 9, 40)
      store.progress(7, 5, 42)
      // drawn at once, from the event: no timer runs
      expect(out).to.include('syncing: 7 blocks merged (7.0 KB), 5 left, height 42')
      store.progress(12, 0, 47)
      expect(out).to.include('in sync: merged 12 blocks (12.0 KB) in ')
      expect(out).to.include('height 47\n')
      expect(out.match(/in sync/g)).to.have.lengthOf(1)
      // the next catch-up counts from there
      store.progress(14, 1, 48)
      store.progress(15, 0, 49)
      expect(out).to.include('in sync: merged 3 blocks (3.0 KB)')
    } finally {
      progress.stop()
    }
    expect(store.listenerCount('sync:progress')).to.equal(0)
  })

  it('redraws at most once per interval, and not at all off a terminal', () => {
    const store = new FakeStore()
    let out = ''
    const progress = new SyncProgress(store, { write: t => { out += t }, tty: true, interval: 60_000 })
    progress.start()
    for (let i = 1; i <= 50; i++) store.progress(i, 100 - i, i)
    progress.stop()
    expect(out.match(/syncing:/g)).to.have.lengthOf(1)

    let plain = ''
    const offTty = new SyncProgress(store, { write: t => { plain += t }, tty: false })
    offTty.start()
    store.progress(60, 10, 60)
    store.progress(61, 0, 61)
    offTty.stop()
    expect(plain).to.not.include('syncing:')
    expect(plain).to.match(/^in sync: merged 61 blocks/)
  })

  it('a catch-up that reaches 0 in its first event still gets its "in sync" line, then the prompt is redrawn; an idle event prints nothing', () => {
    const store = new FakeStore()
    let out = ''
    let redrawn = 0
    const progress = new SyncProgress(store, { write: t => { out += t }, tty: true, interval: 0, onNotice: () => { redrawn++ } })
    progress.start()
    try {
      store.progress(2, 0, 3)
      expect(out).to.include('in sync: merged 2 blocks')
      expect(out).to.not.include('syncing:')
      expect(redrawn).to.equal(1)
      // a head already known: its turn ends with nothing merged
      store.progress(2, 0, 3)
      expect(out.match(/in sync/g)).to.have.lengthOf(1)
      expect(redrawn).to.equal(1)
    } finally {
      progress.stop()
    }
  })

  it('a re-announcement that queues a job but merges nothing writes nothing over the prompt', () => {
    const store = new FakeStore()
    let out = ''
    let redrawn = 0
    const progress = new SyncProgress(store, { write: t => { out += t }, tty: true, interval: 0, onNotice: () => { redrawn++ } })
    progress.start()
    try {
      // three rebroadcasts of heads the replica has: each is queued (frontier 1), then found known
      for (let i = 0; i < 3; i++) {
        store.progress(0, 1, 9)
        store.progress(0, 0, 9)
      }
    } finally {
      progress.stop()
    }
    expect(out).to.equal('')
    expect(redrawn).to.equal(0)
  })

  it('the first catch-up after start reports its duration from start, not from 1970', () => {
    const store = new FakeStore()
    let out = ''
    const progress = new SyncProgress(store, { write: t => { out += t }, tty: true, interval: 10 })
    progress.start()
    try {
      // merged before any event showed a frontier
      store.progress(1, 0, 1)
      expect(out).to.include('in sync: merged 1 blocks')
    } finally {
      progress.stop()
    }
    const secs = Number(/in ([\d.]+) s/.exec(out)?.[1])
    // the test itself is bounded by mocha's timeout: an hour is far from both
    expect(secs).to.be.at.least(0).and.below(3600)
  })
})
