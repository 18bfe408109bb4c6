/**
 * The package as users get it: `npm pack` makes a complete tarball, and an
 * app with that tarball installed imports the package and runs its CLI.
 *
 * The install is offline: the tarball is unpacked into the app's
 * node_modules and each declared dependency is linked from this checkout's
 * node_modules, which is what npm would place there. Only declared
 * dependencies are reachable from the package, so an undeclared import
 * fails here as it would after a real install.
 */

import { execFile } from 'node:child_process'
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { expect } from 'aegir/chai'
import { tempDir } from './fixtures/stores.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const run = promisify(execFile)

interface PackResult { filename: string, files: Array<{ path: string }> }

describe('npm pack and install into a separate app', function () {
  this.timeout(180_000)
  let dir: Awaited<ReturnType<typeof tempDir>>
  let pack: PackResult

  before(async () => {
    dir = await tempDir('crdt-pack')
    // scripts are skipped: dist/ is built already and must not change under the running suite
    const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir.path], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })
    pack = JSON.parse(stdout)[0]
  })

  after(async () => { await dir.remove() })

  it('the tarball holds the build, the sources, both licences and the README, and no tests', () => {
    const files = pack.files.map(f => f.path)
    for (const needed of ['LICENSE-APACHE', 'LICENSE-MIT', 'README.md', 'package.json', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/index.js', 'src/index.ts']) {
      expect(files, needed).to.include(needed)
    }
    expect(files.filter(f => f.startsWith('dist/test/') || f.startsWith('test/') || f.startsWith('dist/readme-examples'))).to.deep.equal([])
  })

  it('package.json builds on install from git and says where it runs', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
    expect(pkg.scripts.prepare).to.equal('npm run build')
    expect(pkg.engines.node).to.equal('>=22.0.0')
    expect(pkg.bin['datastore-crdt']).to.equal('./dist/src/cli/index.js')
  })

  it('an app with the tarball installed imports the package and runs the CLI', async () => {
    const app = join(dir.path, 'app')
    const installed = join(app, 'node_modules', 'datastore-crdt')
    await mkdir(installed, { recursive: true })
    await run('tar', ['-xzf', join(dir.path, pack.filename), '-C', installed, '--strip-components=1'])
    const pkg = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'))
    for (const dep of Object.keys(pkg.dependencies)) {
      await mkdir(join(app, 'node_modules', dep, '..'), { recursive: true })
      await symlink(join(ROOT, 'node_modules', dep), join(app, 'node_modules', dep))
    }
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }))
    await writeFile(join(app, 'app.js'), [
      "import { createCRDTDatastore } from 'datastore-crdt'",
      "import { MemoryDatastore } from 'datastore-core'",
      "import { MemoryBlockstore } from 'blockstore-core'",
      "import { Key } from 'interface-datastore'",
      'const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })',
      "await store.put(new Key('/from'), new TextEncoder().encode('the tarball'))",
      "console.log(new TextDecoder().decode(await store.get(new Key('/from'))))",
      'await store.stop()'
    ].join('\n'))
    const imported = await run(process.execPath, ['app.js'], { cwd: app })
    expect(imported.stdout.trim()).to.equal('the tarball')

    const bin = join(installed, pkg.bin['datastore-crdt'])
    const help = await run(process.execPath, [bin, '--help'], { cwd: app })
    expect(help.stdout).to.include('Usage: datastore-crdt')
    const data = join(dir.path, 'cli-data')
    await run(process.execPath, [bin, '--data', data, 'put', '/cli', 'works'], { cwd: app })
    const got = await run(process.execPath, [bin, '--data', data, '--json', 'get', '/cli'], { cwd: app })
    expect(JSON.parse(got.stdout)).to.deep.equal({ ok: true, found: true, value: 'works' })
  })
})
