/**
 * Parent side of a syncing replica run in a child process (see
 * replica-child.mjs for the protocol). Node built-ins only, so the peer
 * benchmarks can use it with their own child scripts.
 */

import { fork } from 'node:child_process'

/**
 * Forks `script`, sends it `start`, and returns handles on its messages.
 * `close()` asks it to exit and kills it if it has not within `graceMs`.
 * BENCH_CHILD_FLAGS in the environment adds Node/V8 flags to the child only.
 */
export function forkReplica (script, start, { onProgress, graceMs = 15_000 } = {}) {
  // BENCH_CHILD_FLAGS="--flag …": Node/V8 flags for the replica's process only (A, in the parent, runs without them)
  const flags = (process.env.BENCH_CHILD_FLAGS ?? '').split(' ').filter(f => f !== '')
  const child = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [...process.execArgv, ...flags] })
  let exited = false
  const exit = new Promise(resolve => child.once('exit', code => { exited = true; resolve(code) }))
  const ready = new Promise((resolve, reject) => {
    child.on('message', msg => {
      if (msg?.type === 'ready') resolve()
      if (msg?.type === 'done' && msg.error != null) reject(new Error(msg.error))
    })
    exit.then(code => reject(new Error(`replica process exited (${code}) before it was ready`)))
  })
  const done = new Promise(resolve => {
    child.on('message', msg => {
      if (msg?.type === 'progress') onProgress?.(msg.count)
      if (msg?.type === 'done') resolve(msg)
    })
    exit.then(code => resolve({ type: 'done', count: 0, ms: 0, error: `replica process exited (${code})` }))
  })
  ready.catch(() => {})
  child.send(start)
  return {
    pid: child.pid,
    ready,
    done,
    go () { child.send({ cmd: 'go' }) },
    async close () {
      if (exited) return
      try { child.send({ cmd: 'exit' }) } catch {}
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL') }, graceMs)
      await exit
      clearTimeout(timer)
    }
  }
}
