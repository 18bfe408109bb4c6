import { spawn } from 'node:child_process'
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** The code block that follows a `<!-- readme-example: name -->` marker */
async function example (name: string): Promise<string> {
  const readme = await readFile(`${ROOT}README.md`, 'utf8')
  const marker = readme.indexOf(`<!-- readme-example: ${name} -->`)
  expect(marker, `README has no example "${name}"`).to.be.greaterThan(-1)
  const start = readme.indexOf('```ts\n', marker) + 6
  return readme.slice(start, readme.indexOf('\n```', start))
}

describe('README examples', function () {
  this.timeout(60_000)

  it('the Helia example runs and prints the replicated value', async () => {
    // inside the package, `import 'datastore-crdt'` resolves to dist/ through package.json "exports"
    const dir = `${ROOT}dist/readme-examples`
    await mkdir(dir, { recursive: true })
    const file = `${dir}/helia.mjs`
    await writeFile(file, await example('helia'))
    try {
      const child = spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
      const timer = setTimeout(() => child.kill('SIGKILL'), 45_000)
      const code = await new Promise(resolve => child.on('exit', resolve))
      clearTimeout(timer)
      expect(stderr).to.equal('')
      expect(code).to.equal(0)
      expect(stdout.trim()).to.equal('from A')
    } finally {
      await rm(file, { force: true })
    }
  })
})
