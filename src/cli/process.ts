/**
 * Drives a CLI replica in a child process through its script mode
 * (`--script --json`): one command line in, one JSON line out. Used by the
 * demo and the tests.
 */

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { ChildProcessWithoutNullStreams } from 'node:child_process'

export const CLI_PATH = fileURLToPath(new URL('./index.js', import.meta.url))

export interface ReplicaProcessInit {
  data: string
  topic: string
  rebroadcast?: number
  peers?: string[]
  /** ms to wait for the ready line and for each reply */
  timeout?: number
}

export type Reply = Record<string, any> & { ok: boolean }

export class ReplicaProcess {
  public peerId = ''
  public addrs: string[] = []
  private readonly child: ChildProcessWithoutNullStreams
  private readonly lines: string[] = []
  private readonly waiters: Array<(line: string) => void> = []
  private readonly timeout: number
  private exited = false
  public stderr = ''
  public readonly exit: Promise<number | null>

  private constructor (init: ReplicaProcessInit) {
    this.timeout = init.timeout ?? 30_000
    const args = [CLI_PATH, '--data', init.data, '--topic', init.topic, '--script', '--json', '--rebroadcast', String(init.rebroadcast ?? 1000)]
    for (const peer of init.peers ?? []) args.push('--peer', peer)
    this.child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    this.exit = new Promise(resolve => this.child.on('exit', code => {
      this.exited = true
      resolve(code)
    }))
    this.child.stderr.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-10_000) })
    createInterface({ input: this.child.stdout }).on('line', line => {
      const waiter = this.waiters.shift()
      if (waiter != null) waiter(line)
      else this.lines.push(line)
    })
  }

  /** Starts a replica process and waits for its ready line */
  static async start (init: ReplicaProcessInit): Promise<ReplicaProcess> {
    const replica = new ReplicaProcess(init)
    try {
      const ready = JSON.parse(await replica.nextLine())
      replica.peerId = ready.peerId
      replica.addrs = ready.addrs
      return replica
    } catch (err) {
      await replica.kill()
      throw err
    }
  }

  private async nextLine (): Promise<string> {
    const queued = this.lines.shift()
    if (queued != null) return queued
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) this.waiters.splice(i, 1)
        reject(new Error(`replica did not answer within ${this.timeout} ms; stderr: ${this.stderr.slice(-500)}`))
      }, this.timeout)
      const waiter = (line: string): void => {
        clearTimeout(timer)
        resolve(line)
      }
      this.waiters.push(waiter)
      void this.exit.then(() => {
        const i = this.waiters.indexOf(waiter)
        if (i >= 0) {
          this.waiters.splice(i, 1)
          clearTimeout(timer)
          reject(new Error(`replica exited; stderr: ${this.stderr.slice(-500)}`))
        }
      })
    })
  }

  /** Sends one command line and returns its JSON reply */
  async run (command: string): Promise<Reply> {
    if (this.exited) throw new Error('replica has exited')
    this.child.stdin.write(command + '\n')
    return JSON.parse(await this.nextLine())
  }

  /** Like `run`, but throws when the reply is not ok */
  async must (command: string): Promise<Reply> {
    const reply = await this.run(command)
    if (!reply.ok) throw new Error(`${command}: ${String(reply.error)}`)
    return reply
  }

  /** Asks the replica to quit; kills it if it has not exited within 10 s */
  async quit (): Promise<void> {
    if (this.exited) return
    this.child.stdin.write('exit\n')
    this.child.stdin.end()
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 10_000)
    await this.exit
    clearTimeout(timer)
  }

  async kill (): Promise<void> {
    if (this.exited) return
    this.child.kill('SIGKILL')
    await this.exit
  }
}
