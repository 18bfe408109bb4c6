/**
 * Runs every TypeScript snippet of the README (each is plain JavaScript
 * apart from its fence) and checks that it prints what the README says it
 * prints. Each ```ts block must follow a `<!-- readme-example: name -->`
 * marker and be followed by "It prints:" and a ```text block. Inside the
 * package, `import 'datastore-crdt'` resolves to dist/ through package.json
 * "exports"; each snippet runs in its own empty working directory.
 */

import { spawn } from 'node:child_process'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { tempDir } from './fixtures/stores.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

interface Example { name: string, code: string, output?: string }

/** Every ```ts block of the README with its marker name and its stated output */
function examples (readme: string): Example[] {
  const out: Example[] = []
  const fence = /```ts\n([\s\S]*?)\n```\n/g
  let m: RegExpExecArray | null
  while ((m = fence.exec(readme)) != null) {
    const before = readme.slice(0, m.index)
    const marker = /<!-- readme-example: ([\w-]+) -->\s*$/.exec(before)
    const after = readme.slice(m.index + m[0].length)
    const output = /^\s*It prints:\s*```text\n([\s\S]*?)\n```/.exec(after)
    out.push({ name: marker?.[1] ?? `(no marker, at offset ${m.index})`, code: m[1], output: output?.[1] })
  }
  return out
}

async function runExample (example: Example, cwd: string): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const dir = `${ROOT}dist/readme-examples`
  await mkdir(dir, { recursive: true })
  const file = `${dir}/${example.name}.mjs`
  await writeFile(file, example.code)
  try {
    const child = spawn(process.execPath, [file], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
    clearTimeout(timer)
    return { code, stdout, stderr }
  } finally {
    await rm(file, { force: true })
  }
}

describe('README examples', function () {
  this.timeout(120_000)
  let readme: string

  before(async () => {
    readme = await readFile(`${ROOT}README.md`, 'utf8')
  })

  it('every TypeScript snippet has a name and a stated output', () => {
    const all = examples(readme)
    expect(all.map(e => e.name)).to.deep.equal(['usage', 'helia', 'helia-datastore', 'synced', 'progress', 'trusted'])
    for (const example of all) expect(example.output, `output of ${example.name}`).to.be.a('string')
  })

  for (const name of ['usage', 'helia-datastore', 'synced', 'helia', 'progress', 'trusted']) {
    it(`the "${name}" example runs and prints what the README says`, async () => {
      const example = examples(readme).find(e => e.name === name)
      expect(example, `README has no example "${name}"`).to.not.equal(undefined)
      const cwd = await tempDir(`crdt-readme-${name}`)
      try {
        const { code, stdout, stderr } = await runExample(example as Example, cwd.path)
        expect(stderr).to.equal('')
        expect(code).to.equal(0)
        expect(stdout.trimEnd()).to.equal(example?.output)
      } finally {
        await cwd.remove()
      }
    })
  }
})
