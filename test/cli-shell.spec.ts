/**
 * The interactive shell on a real pseudo-terminal (util-linux `script`
 * allocates it; nothing native from npm is needed): when a catch-up from a
 * peer finishes, the shell prints its "in sync" line on the terminal and
 * then draws its prompt again, with what the user had typed so far, so the
 * user can go on typing where they were.
 *
 * Every wait is bounded; the shell and the peer are stopped in `finally`.
 */

import { spawn, spawnSync } from 'node:child_process'
import { expect } from 'aegir/chai'
import { CLI_PATH, ReplicaProcess } from '../src/cli/process.js'
import { tempDir } from './fixtures/stores.js'

const WAIT_MS = 30_000

describe('interactive shell on a pseudo-terminal', function () {
  this.timeout(90_000)

  it('after the "in sync" line the prompt is drawn again, keeping the half-typed command', async () => {
    if (spawnSync('script', ['--version']).status !== 0) {
      throw new Error('the `script` command (util-linux) is needed to drive the shell on a pseudo-terminal')
    }
    const dir = await tempDir('crdt-shell')
    const topic = `cli-shell-${Math.random().toString(36).slice(2)}`
    const peer = await ReplicaProcess.start({ data: `${dir.path}/peer`, topic, rebroadcast: 300 })
    const cmd = `${process.execPath} ${CLI_PATH} --data ${dir.path}/shell --topic ${topic} --rebroadcast 300 --peer ${peer.addrs[0]}`
    // everything the terminal shows: stdout and stderr of the shell share the pseudo-terminal
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let raw = ''
    child.stdout.on('data', (d: Buffer) => { raw += d.toString() })
    // the text of what the terminal shows, without readline's cursor moves and line clears
    const screen = (): string => raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '') // eslint-disable-line no-control-regex -- strips the terminal's escape sequences
    const exited = new Promise<number | null>(resolve => child.on('exit', resolve))
    const killer = setTimeout(() => child.kill('SIGKILL'), 80_000)
    const waitFor = async (test: () => boolean, what: string): Promise<void> => {
      const deadline = Date.now() + WAIT_MS
      while (!test() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
      if (!test()) throw new Error(`the shell never showed ${what}; the terminal showed:\n${screen()}`)
    }
    try {
      await waitFor(() => screen().includes('crdt> '), 'its prompt')
      // half a command, not yet entered, while a write arrives from the peer
      child.stdin.write('get /late')
      await waitFor(() => screen().includes('crdt> get /late'), 'the typed text')
      await peer.must('put /late from-the-peer')
      await waitFor(() => /in sync: merged [1-9]\d* blocks/.test(screen()), 'the "in sync" line')

      // what the terminal shows after the notice: the prompt again, with the typed text
      const afterNotice = (): string => screen().slice(screen().search(/in sync: merged/))
      await waitFor(() => afterNotice().includes('crdt> get /late'), 'the prompt after the "in sync" line')
      expect(afterNotice()).to.match(/^in sync: merged \d+ blocks \([\d.]+ KB\) in [\d.]+ s, height \d+\r?\n[\s\S]*crdt> get \/late/)

      // the redrawn line is live: finishing it runs the whole command
      child.stdin.write('\n')
      await waitFor(() => afterNotice().includes('from-the-peer\r\n'), 'the value read by the completed command')
      child.stdin.write('exit\n')
      expect(await exited).to.equal(0)
    } finally {
      clearTimeout(killer)
      child.kill('SIGKILL')
      await peer.quit()
      await dir.remove()
    }
  })
})
