import { expect } from 'aegir/chai'
import { TypedEventEmitter } from 'main-event'
import { SyncProgress } from '../src/cli/progress.js'
import { waitFor } from './fixtures/network.js'

class FakeStore extends TypedEventEmitter<{ processed: CustomEvent<{ local: boolean }> }> {
  queuedJobs = 0
  maxHeight = 0
  stats (): { queuedJobs: number, maxHeight: number } {
    return { queuedJobs: this.queuedJobs, maxHeight: this.maxHeight }
  }
}

describe('sync progress', () => {
  it('draws a live counter while blocks are queued, then one "in sync" line', async () => {
    const store = new FakeStore()
    let out = ''
    const progress = new SyncProgress(store as any, { write: t => { out += t }, tty: true, interval: 10 })
    progress.start()
    try {
      store.queuedJobs = 5
      for (let i = 0; i < 7; i++) store.safeDispatchEvent('processed', { detail: { local: false } })
      store.safeDispatchEvent('processed', { detail: { local: true } })
      store.maxHeight = 42
      await waitFor(() => out.includes('syncing: 7 blocks merged, 5 queued, height 42'), 2000, 'the counter')
      store.queuedJobs = 0
      await waitFor(() => out.includes('in sync: merged 7 blocks'), 2000, 'the in-sync notice')
      expect(out).to.include('height 42\n')
      expect(out.match(/in sync/g)).to.have.lengthOf(1)
    } finally {
      progress.stop()
    }
    expect(store.listenerCount('processed')).to.equal(0)
  })

  it('a catch-up too short to be polled busy still gets its "in sync" line, then the prompt is redrawn', async () => {
    const store = new FakeStore()
    let out = ''
    let redrawn = 0
    const progress = new SyncProgress(store as any, { write: t => { out += t }, tty: true, interval: 10, onNotice: () => { redrawn++ } })
    progress.start()
    try {
      await new Promise(resolve => setTimeout(resolve, 30))
      // merged between two polls: queuedJobs is never seen above 0
      for (let i = 0; i < 2; i++) store.safeDispatchEvent('processed', { detail: { local: false } })
      store.maxHeight = 3
      await waitFor(() => out.includes('in sync: merged 2 blocks'), 2000, 'the in-sync notice')
      expect(out).to.not.include('syncing:')
      await waitFor(() => redrawn === 1, 2000, 'the prompt redraw')
      // a local write alone is no catch-up
      store.safeDispatchEvent('processed', { detail: { local: true } })
      await new Promise(resolve => setTimeout(resolve, 50))
      expect(out.match(/in sync/g)).to.have.lengthOf(1)
      expect(redrawn).to.equal(1)
    } finally {
      progress.stop()
    }
  })

  it('a re-announcement that queues a job but merges nothing writes nothing over the prompt', async () => {
    const store = new FakeStore()
    let out = ''
    let redrawn = 0
    const progress = new SyncProgress(store as any, { write: t => { out += t }, tty: true, interval: 10, onNotice: () => { redrawn++ } })
    progress.start()
    try {
      // three rebroadcasts of heads the replica has: each is queued, then found known
      for (let i = 0; i < 3; i++) {
        store.queuedJobs = 1
        await new Promise(resolve => setTimeout(resolve, 40))
        store.queuedJobs = 0
        await new Promise(resolve => setTimeout(resolve, 40))
      }
    } finally {
      progress.stop()
    }
    expect(out).to.equal('')
    expect(redrawn).to.equal(0)
  })

  it('the first catch-up after start reports its duration from start, not from 1970', async () => {
    const store = new FakeStore()
    let out = ''
    const progress = new SyncProgress(store as any, { write: t => { out += t }, tty: true, interval: 10 })
    progress.start()
    try {
      // merged before the first poll
      store.safeDispatchEvent('processed', { detail: { local: false } })
      await waitFor(() => out.includes('in sync: merged 1 blocks'), 2000, 'the in-sync notice')
    } finally {
      progress.stop()
    }
    const secs = Number(/in ([\d.]+) s/.exec(out)?.[1])
    // the test itself is bounded by mocha's timeout: an hour is far from both
    expect(secs).to.be.at.least(0).and.below(3600)
  })
})
