/**
 * The child-process side of a syncing replica (see child.mjs for the
 * parent side), for any store: `runChild(open)` where `open(start)` makes
 * the replica and resolves to
 *
 *   { onKey(fn), dial(addr), subscribers(topic), countKeys(), stats?(), close() }
 *
 * onKey(fn) calls fn() once per key that becomes visible; countKeys() counts
 * the keys the store holds (to confirm the events). Node built-ins only.
 *
 * Parent → child (IPC):
 *   { cmd: 'start', dir, topic, dial, expected, timeoutMs, init }
 *   { cmd: 'go' }    start the clock (when init.waitForGo)
 *   { cmd: 'exit' }  stop and exit
 * Child → parent:
 *   { type: 'ready' }                       connected and subscribed
 *   { type: 'progress', count }             about once a second
 *   { type: 'done', count, ms, rss, stats, error? }
 *
 * The clock starts at 'go' or, without waitForGo, just before dialling.
 * `ms` (and `cpuMs`) end when the store holds `expected` keys, as counted
 * by onKey; countKeys() then confirms that count, off the clock (listing
 * 100k keys takes B ~0.5 s, which is not replication), and a count it does
 * not confirm makes the run an error. `rss.hwm` is the kernel's peak RSS (VmHWM) of
 * this process; `rss.sampled` the largest of 100 ms samples; `rss.idle` the
 * RSS once connected and subscribed, before anything was synced.
 */

import { now, rssSampler, waitFor } from './common.mjs'

/**
 * With BENCH_HEAP_PROFILE=<file> in the environment, the child samples its
 * heap allocations and, when done, writes the allocations still live then
 * as a .heapprofile (open it in Chrome DevTools, or sum it by stack); with
 * BENCH_HEAP_PROFILE_ALL=1 as well, every sampled allocation of the run
 * (=survivors: those that outlived the young generation).
 */
async function heapProfiler () {
  const file = process.env.BENCH_HEAP_PROFILE
  if (file == null || file === '') return undefined
  const { Session } = await import('node:inspector/promises')
  const { writeFile } = await import('node:fs/promises')
  const session = new Session()
  session.connect()
  await session.post('HeapProfiler.enable')
  // BENCH_HEAP_PROFILE_ALL=1: every sampled allocation, collected or not (where the churn comes from)
  // BENCH_HEAP_PROFILE_ALL=survivors: those that outlived the young generation (promoted), collected later or not
  const all = process.env.BENCH_HEAP_PROFILE_ALL
  await session.post('HeapProfiler.startSampling', { samplingInterval: 32768, includeObjectsCollectedByMajorGC: all === '1' || all === 'survivors', includeObjectsCollectedByMinorGC: all === '1' })
  return async () => {
    const { profile } = await session.post('HeapProfiler.getSamplingProfile')
    await writeFile(file, JSON.stringify(profile))
    await session.post('HeapProfiler.stopSampling')
    session.disconnect()
  }
}

/**
 * With BENCH_MEM_TRACE=<file> in the environment, the child appends a line
 * every 250 ms: ms since start, keys so far, RSS (and its anonymous and
 * file-backed parts), and the size of each V8 heap space (MB), to see where
 * the memory of a run goes over time.
 */
async function memoryTrace (count) {
  const file = process.env.BENCH_MEM_TRACE
  if (file == null || file === '') return undefined
  const v8 = await import('node:v8')
  const { appendFileSync, readFileSync } = await import('node:fs')
  // the kernel's split of RSS: anonymous pages (heaps, malloc) and file pages
  // (LevelDB reads its table files through mmap, so they count as RSS too)
  const split = () => {
    try {
      const status = readFileSync('/proc/self/status', 'utf8')
      const kb = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN)
      return ` anon=${(kb('RssAnon') / 1024).toFixed(1)} file=${(kb('RssFile') / 1024).toFixed(1)}`
    } catch {
      return ''
    }
  }
  const t0 = now()
  const mb = (n) => (n / 1048576).toFixed(1)
  const timer = setInterval(() => {
    const m = process.memoryUsage()
    const spaces = v8.getHeapSpaceStatistics().map(s => `${s.space_name.replace('_space', '')}=${mb(s.space_size)}/${mb(s.space_used_size)}`).join(' ')
    appendFileSync(file, `${Math.round(now() - t0)} ms keys=${count()} rss=${mb(m.rss)}${split()} heap=${mb(m.heapTotal)}/${mb(m.heapUsed)} ext=${mb(m.external)} ab=${mb(m.arrayBuffers)} ${spaces}\n`)
  }, 250)
  timer.unref()
  return () => { clearInterval(timer) }
}

/**
 * With BENCH_HEAP_SNAPSHOT=<file> and BENCH_HEAP_SNAPSHOT_AT=<keys>, the
 * child writes a heap snapshot once it holds that many keys (V8 runs a full
 * GC first, so it shows what is live mid-run, not the garbage awaiting one).
 */
const snapshotAt = Number(process.env.BENCH_HEAP_SNAPSHOT_AT ?? NaN)
function writeSnapshot () {
  const file = process.env.BENCH_HEAP_SNAPSHOT
  if (file == null || file === '') return
  import('node:v8').then(v8 => { v8.writeHeapSnapshot(file) }, () => {})
}

export function runChild (open) {
  const rss = rssSampler(100)
  const heap = heapProfiler()
  let keys = 0
  const trace = memoryTrace(() => keys)
  let replica
  let t0 = now()
  // CPU time of the process (all threads) from 'go' (or the dial) until done
  let cpu0 = process.cpuUsage()
  let goResolve
  const go = new Promise(resolve => { goResolve = resolve })

  async function start ({ topic, dial, expected, timeoutMs, init = {}, ...rest }) {
    replica = await open({ topic, init, ...rest })
    let count = 0
    let reached
    const allThere = new Promise(resolve => { reached = resolve })
    // the timeline of the run (ms from the dial): dialled, subscribed, first key, every key
    const timeline = {}
    replica.onKey(() => {
      keys = ++count
      if (count === snapshotAt) writeSnapshot()
      if (count === 1) timeline.firstKey = Math.round(now() - t0)
      if (count >= expected) reached()
    })

    t0 = now()
    cpu0 = process.cpuUsage()
    await replica.dial(dial)
    timeline.dialled = Math.round(now() - t0)
    await waitFor(() => replica.subscribers(topic) > 0, 20_000, 'the gossipsub subscription', 5)
    timeline.subscribed = Math.round(now() - t0)
    // idle: the replica up, connected and subscribed, before it has synced anything
    const idleRss = process.memoryUsage().rss
    process.send({ type: 'ready' })
    if (init.waitForGo === true) await go

    const progress = setInterval(() => process.send({ type: 'progress', count }), 1000)
    const deadline = t0 + timeoutMs
    let error
    let timer
    let ms
    let cpu
    try {
      const timeout = new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms with ${count} of ${expected} keys`)), Math.max(0, deadline - now()))
      })
      await Promise.race([allThere, timeout])
      // the events say every key is there: the clock stops here
      ms = now() - t0
      cpu = process.cpuUsage(cpu0)
      timeline.allKeys = Math.round(ms)
      // then the store itself confirms it (off the clock)
      await waitFor(async () => (await replica.countKeys()) >= expected, Math.max(1000, deadline - now()), 'the store to list every key', 200)
    } catch (err) {
      error = err.message
    } finally {
      clearTimeout(timer)
    }
    ms ??= now() - t0
    cpu ??= process.cpuUsage(cpu0)
    const cpuMs = (cpu.user + cpu.system) / 1000
    clearInterval(progress)
    await (await heap)?.()
    const stopTrace = await trace
    stopTrace?.()
    process.send({ type: 'done', count, ms, cpuMs, rss: { ...(await rss.stop()), idle: idleRss }, stats: await replica.stats?.(), timeline, error })
  }

  async function exit (code) {
    const force = setTimeout(() => process.exit(code), 10_000)
    force.unref()
    try {
      await replica?.close()
    } finally {
      process.exit(code)
    }
  }

  process.on('message', msg => {
    if (msg?.cmd === 'start') {
      start(msg).catch(err => {
        process.send({ type: 'done', count: 0, ms: 0, error: `replica failed: ${err.message}` })
      })
    } else if (msg?.cmd === 'go') {
      t0 = now()
      cpu0 = process.cpuUsage()
      goResolve()
    } else if (msg?.cmd === 'exit') {
      void exit(0)
    }
  })
  process.on('disconnect', () => { void exit(1) })
}
