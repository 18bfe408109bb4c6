/**
 * On a Node.js older than 22 the package fails at once with a message
 * naming the version needed, from the CLI and on import. An old Node is
 * simulated by rewriting `process.versions.node` before anything loads
 * (a real Node 20 gives the same messages).
 */

import { execFile } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { CLI_PATH } from '../src/cli/process.js'
import { nodeVersionProblem } from '../src/node-version.js'
import { tempDir } from './fixtures/stores.js'

const ENTRY = fileURLToPath(new URL('../src/index.js', import.meta.url))

async function attempt (node: string, args: string[]): Promise<{ code: number, stderr: string }> {
  return new Promise(resolve => {
    execFile(node, args, { timeout: 60_000 }, (err: any, _stdout, stderr) => {
      resolve({ code: err == null ? 0 : err.code, stderr })
    })
  })
}

describe('Node.js version check', function () {
  this.timeout(120_000)

  it('names the version needed for Node < 22 and accepts 22 and later', () => {
    expect(nodeVersionProblem('20.19.0')).to.include('needs Node.js 22 or later; this is Node.js 20.19.0')
    expect(nodeVersionProblem('18.0.0')).to.include('Node.js 22')
    expect(nodeVersionProblem('22.0.0')).to.equal(undefined)
    expect(nodeVersionProblem('24.9.0')).to.equal(undefined)
  })

  it('the CLI and an import fail fast with that message on an old Node', async () => {
    const dir = await tempDir('crdt-node-version')
    try {
      const fake = join(dir.path, 'node20.mjs')
      await writeFile(fake, "Object.defineProperty(process.versions, 'node', { value: '20.11.1' })\n")
      const cli = await attempt(process.execPath, ['--import', fake, CLI_PATH, '--help'])
      expect(cli.code).to.equal(1)
      expect(cli.stderr.trim()).to.equal(nodeVersionProblem('20.11.1'))
      const imported = await attempt(process.execPath, ['--import', fake, '--input-type=module', '-e', `await import(${JSON.stringify(ENTRY)})`])
      expect(imported.code).to.not.equal(0)
      expect(imported.stderr).to.include('UnsupportedNodeError').and.include('datastore-crdt needs Node.js 22 or later; this is Node.js 20.11.1')
    } finally {
      await dir.remove()
    }
  })
})
