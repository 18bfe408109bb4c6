/**
 * The harness's handle on one replica process: starts it (fork, IPC),
 * sends requests, SIGKILLs it, stops it cleanly. A replica keeps its index,
 * data directory and peer id across restarts; its address changes.
 */

import { fork } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { ReplicaConfig, ReplicaEvent, ReplicaReply, ReplicaRequest } from './protocol.js'
import type { ChildProcess } from 'node:child_process'

const REPLICA_SCRIPT = fileURLToPath(new URL('./replica.js', import.meta.url))
const STDERR_LINES = 60

/** The replica died (or was killed) before answering */
export class ReplicaDiedError extends Error {
  static override name = 'ReplicaDiedError'
  override name = 'ReplicaDiedError'
}

/** A request got no answer in time */
export class ReplicaTimeoutError extends Error {
  static override name = 'ReplicaTimeoutError'
  override name = 'ReplicaTimeoutError'
}

type Request = ReplicaRequest extends infer R ? R extends unknown ? Omit<R, 'id'> : never : never

interface Waiting {
  resolve(value: any): void
  reject(err: Error): void
  timer: ReturnType<typeof setTimeout>
}

export class ReplicaProcess {
  public readonly index: number
  public readonly dir: string
  public peerId = ''
  public addrs: string[] = []
  public alive = false
  /** Set while a fault action owns this replica (kill, restart) */
  public busy = false
  public incarnation = 0
  /** Called when the process exits without being killed or stopped by the harness */
  public onUnexpectedExit?: (code: number | null, signal: string | null, stderr: string) => void
  private child?: ChildProcess
  private exited?: Promise<void>
  private expectExit = false
  private nextId = 1
  private readonly waiting = new Map<number, Waiting>()
  private readonly armed = new Map<number | 'remote', () => void>()
  private stderr: string[] = []

  /** Where to append the process's stderr, besides keeping its tail */
  private readonly logFile?: string

  constructor (index: number, dir: string, logFile?: string) {
    this.index = index
    this.dir = dir
    this.logFile = logFile
  }

  /** Forks the replica and waits for it to be ready */
  async start (config: Omit<ReplicaConfig, 'index' | 'dir'>, timeout = 60_000): Promise<void> {
    if (this.child != null) throw new Error(`replica ${this.index} is already running`)
    this.incarnation++
    this.expectExit = false
    this.stderr = []
    const child = fork(REPLICA_SCRIPT, [JSON.stringify({ ...config, index: this.index, dir: this.dir })], {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      // e.g. CHAOS_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile the replicas
      execArgv: process.env.CHAOS_NODE_ARGS?.split(' ').filter(a => a !== '') ?? []
    })
    this.child = child
    // a send racing a kill; the request itself is rejected through its callback or the exit
    child.on('error', () => {})
    child.stderr?.setEncoding('utf8')
    if (this.logFile != null) child.stderr?.pipe(createWriteStream(this.logFile, { flags: 'a' }))
    child.stderr?.on('data', (chunk: string) => {
      this.stderr.push(...chunk.split('\n').filter(l => l !== ''))
      if (this.stderr.length > STDERR_LINES) this.stderr.splice(0, this.stderr.length - STDERR_LINES)
    })
    let onReady: (() => void) | undefined
    let onEarlyExit: ((err: Error) => void) | undefined
    const ready = new Promise<void>((resolve, reject) => { onReady = resolve; onEarlyExit = reject })
    child.on('message', (msg: ReplicaEvent | ReplicaReply) => {
      if ('event' in msg) {
        if (msg.event === 'ready') {
          this.peerId = msg.peerId
          this.addrs = msg.addrs
          this.alive = true
          onReady?.()
        } else if (msg.event === 'armed') {
          const key = msg.id ?? 'remote'
          const fire = this.armed.get(key)
          this.armed.delete(key)
          fire?.()
        }
        return
      }
      const waiting = this.waiting.get(msg.id)
      if (waiting == null) return
      this.waiting.delete(msg.id)
      clearTimeout(waiting.timer)
      if (msg.ok) waiting.resolve(msg.result)
      else waiting.reject(Object.assign(new Error(msg.error?.message), { name: msg.error?.name ?? 'Error' }))
    })
    this.exited = new Promise<void>(resolve => {
      child.on('exit', (code, signal) => {
        const wasAlive = this.alive
        this.alive = false
        this.child = undefined
        for (const [id, waiting] of this.waiting) {
          clearTimeout(waiting.timer)
          waiting.reject(new ReplicaDiedError(`replica ${this.index} died (request ${id})`))
        }
        this.waiting.clear()
        this.armed.clear()
        onEarlyExit?.(new Error(`replica ${this.index} exited before it was ready (code ${code}, signal ${signal}):\n${this.stderrTail()}`))
        if (!this.expectExit && wasAlive) this.onUnexpectedExit?.(code, signal, this.stderrTail())
        resolve()
      })
    })
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([ready, new Promise((_resolve, reject) => {
        timer = setTimeout(() => { reject(new Error(`replica ${this.index} was not ready within ${timeout} ms:\n${this.stderrTail()}`)) }, timeout)
      })])
    } catch (err) {
      await this.kill()
      throw err
    } finally {
      clearTimeout(timer)
      onReady = undefined
      onEarlyExit = undefined
    }
  }

  stderrTail (): string {
    return this.stderr.join('\n')
  }

  /** Sends a request; rejects with ReplicaDiedError when the process dies first */
  async request <T = any> (req: Request, timeout = 60_000): Promise<T> {
    const child = this.child
    if (child == null || !this.alive) throw new ReplicaDiedError(`replica ${this.index} is not running`)
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new ReplicaTimeoutError(`replica ${this.index} did not answer ${req.cmd} within ${timeout} ms`))
      }, timeout)
      this.waiting.set(id, { resolve, reject, timer })
      const unreachable = (err: Error): void => {
        clearTimeout(timer)
        if (this.waiting.delete(id)) reject(new ReplicaDiedError(`replica ${this.index} cannot be reached: ${err.message}`))
      }
      try {
        // with a callback, a channel closed by a kill is reported here instead of as an 'error' event
        child.send({ ...req, id }, (err) => { if (err != null) unreachable(err) })
      } catch (err: any) {
        unreachable(err)
      }
    })
  }

  /** The id the next request will carry (to arm a batch before sending it) */
  peekId (): number {
    return this.nextId
  }

  /** Resolves when the replica reports an `armed` event for `id` (or remote progress) */
  async whenArmed (id: number | 'remote', timeout: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined
    const armed = await new Promise<boolean>(resolve => {
      this.armed.set(id, () => { resolve(true) })
      timer = setTimeout(() => { resolve(false) }, timeout)
      void this.exited?.then(() => { resolve(false) })
    })
    clearTimeout(timer)
    this.armed.delete(id)
    return armed
  }

  /** SIGKILL, then wait for the exit */
  async kill (): Promise<void> {
    if (this.child == null) return
    this.expectExit = true
    this.child.kill('SIGKILL')
    await this.exited
  }

  /** Asks the replica to stop its store and node and exit; returns its exit code */
  async stop (timeout = 30_000): Promise<number | null> {
    const child = this.child
    if (child == null) return null
    this.expectExit = true
    let code: number | null = null
    child.once('exit', (c) => { code = c })
    try {
      await this.request({ cmd: 'stop' }, timeout)
    } catch {
      await this.kill()
      return -1
    }
    await this.exited
    return code
  }
}
