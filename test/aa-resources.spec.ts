/**
 * Loaded first (files run in name order): records every timer created from
 * here on, so `zz-leaks.spec.ts` can name the ones still keeping the
 * process alive after every test has run.
 */

import { createHook } from 'node:async_hooks'

export interface TrackedTimer {
  stack: string
  resource: { hasRef?(): boolean, _destroyed?: boolean }
}

const timers = new Map<number, TrackedTimer>()

createHook({
  init (id, type, _trigger, resource: any) {
    if (type === 'Timeout') {
      timers.set(id, { stack: new Error().stack?.split('\n').slice(3, 9).join('\n') ?? '', resource })
    }
  },
  destroy (id) {
    timers.delete(id)
  }
}).enable()

/** Timers that are neither cleared, fired nor unref'd: they would keep the process alive */
export function liveTimers (): TrackedTimer[] {
  return [...timers.values()].filter(t => t.resource._destroyed !== true && t.resource.hasRef?.() === true)
}

(globalThis as any).__crdtLiveTimers = liveTimers
