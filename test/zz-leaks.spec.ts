/**
 * Runs last: fails when any test left a timer, socket or server keeping the
 * process alive. Timers that libp2p schedules once while stopping (a last
 * gossipsub heartbeat, a debounced address update) fire within a few
 * seconds, so the check waits up to 5 s for them before failing.
 */

import { expect } from 'aegir/chai'
import type { TrackedTimer } from './aa-resources.spec.js'

const HANDLES = new Set(['TCPSocketWrap', 'TCPServerWrap', 'TCPWrap', 'UDPWrap'])

function leftovers (): { timers: string[], handles: string[] } {
  const live: TrackedTimer[] = (globalThis as any).__crdtLiveTimers?.() ?? []
  return {
    timers: live.map(t => t.stack).filter(s => !s.includes('mocha/lib')),
    handles: process.getActiveResourcesInfo().filter(r => HANDLES.has(r))
  }
}

after(async function () {
  this.timeout(0)
  const deadline = Date.now() + 5000
  let left = leftovers()
  while ((left.timers.length > 0 || left.handles.length > 0) && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 100))
    left = leftovers()
  }
  expect(left.timers, 'timers still running after every test').to.deep.equal([])
  expect(left.handles, 'sockets still open after every test').to.deep.equal([])
})
