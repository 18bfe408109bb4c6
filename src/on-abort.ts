/**
 * `onAbort(signal, fn)`: runs `fn` when `signal` aborts, until the returned
 * function is called; for code that waits on a long-lived signal (the
 * store's, a walk's, the sync client's) once per block, message or frame.
 *
 * Why not `signal.addEventListener('abort', fn)` then `removeEventListener`
 * each time: Node's EventTarget keeps its listeners in a linked list and a
 * removed listener keeps its `next` pointer. Once one removed listener has
 * reached the old generation (it lived through two young collections, or a
 * full collection found it still registered), it keeps the listener added
 * after it alive through every young collection, that one the next, and so
 * on until the next full collection: every per-operation listener, with
 * the closure it calls and what that holds, is promoted. Seen as a catch-up
 * whose memory grew with the chain's length in some runs and not in others.
 * Here the signal gets one listener of its own, kept until it aborts, and
 * the callbacks wait in a list whose removed entries point nowhere.
 * `AbortSignal.any()` avoids the listener but costs a composite signal with
 * weak references the young collections keep, per call (measured ~6 µs,
 * and ~14% of a catch-up's CPU when made per block).
 */

/** A waiting callback; a removed one has no neighbours and no callback */
interface Entry {
  fn?(): void
  prev?: Entry
  next?: Entry
}

/** The callbacks waiting on one signal, behind its one listener */
class Waiting {
  head?: Entry
  tail?: Entry

  add (fn: () => void): Entry {
    const entry: Entry = { fn, prev: this.tail }
    if (this.tail == null) this.head = entry
    else this.tail.next = entry
    this.tail = entry
    return entry
  }

  remove (entry: Entry): void {
    if (entry.fn == null) return
    if (entry.prev == null) this.head = entry.next
    else entry.prev.next = entry.next
    if (entry.next == null) this.tail = entry.prev
    else entry.next.prev = entry.prev
    entry.fn = undefined
    entry.prev = undefined
    entry.next = undefined
  }

  /** Runs every callback waiting when the signal aborted, oldest first, and forgets them */
  fire (): void {
    const fns: Array<() => void> = []
    let entry = this.head
    this.head = undefined
    this.tail = undefined
    while (entry != null) {
      const next = entry.next
      if (entry.fn != null) fns.push(entry.fn)
      entry.fn = undefined
      entry.prev = undefined
      entry.next = undefined
      entry = next
    }
    for (const fn of fns) fn()
  }
}

const bySignal = new WeakMap<AbortSignal, Waiting>()

/**
 * Calls `fn` once when `signal` aborts (at once when it has already);
 * returns the function that takes it back. A callback taken back, or
 * called, holds nothing.
 */
export function onAbort (signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) {
    fn()
    return () => {}
  }
  let waiting = bySignal.get(signal)
  if (waiting == null) {
    const created = new Waiting()
    waiting = created
    bySignal.set(signal, created)
    signal.addEventListener('abort', () => {
      bySignal.delete(signal)
      created.fire()
    }, { once: true })
  }
  const entry = waiting.add(fn)
  const owner = waiting
  return () => { owner.remove(entry) }
}
