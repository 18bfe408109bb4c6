/**
 * The command-line replica listens on WebSockets when given a `/ws`
 * address, which is what a browser replica dials.
 */

import { spawn } from 'node:child_process'
import { expect } from 'aegir/chai'
import { CLI_PATH } from '../src/cli/process.js'
import { tempDir } from './fixtures/stores.js'

async function run (args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

describe('command-line replica on WebSockets', function () {
  this.timeout(90_000)

  it('--listen /ip4/127.0.0.1/tcp/0/ws listens on a WebSockets address at 127.0.0.1', async () => {
    const dir = await tempDir('crdt-cli-ws')
    try {
      const out = await run([CLI_PATH, '--data', dir.path, '--listen', '/ip4/127.0.0.1/tcp/0/ws', '--json', 'addrs'])
      expect(out.code, out.stderr).to.equal(0)
      const { addrs } = JSON.parse(out.stdout.trim().split('\n').at(-1) ?? '{}')
      expect(addrs).to.be.an('array').with.lengthOf(1)
      expect(addrs[0]).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws\/p2p\/12D3KooW/)
    } finally {
      await dir.remove()
    }
  })
})
