/**
 * The package as users get it: `npm pack` makes a complete tarball; an app
 * that installs it alone gets the core and nothing of LevelDB, libp2p or
 * Helia; an app that also installs the optional peers runs the CLI.
 *
 * The install is offline: the tarball is unpacked into the app's
 * node_modules and the packages npm would place beside it are linked from
 * this checkout's node_modules. Which packages those are comes from
 * package-lock.json, walked the way npm resolves (nested node_modules
 * first, then each parent's): the closure of the tarball's `dependencies`
 * alone for the core app, run with --preserve-symlinks so nothing outside
 * that closure is reachable. Only declared dependencies are reachable from
 * the package, so an undeclared import fails here as it would after a real
 * install.
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
interface LockEntry { dependencies?: Record<string, string>, optionalDependencies?: Record<string, string>, peerDependencies?: Record<string, string>, peerDependenciesMeta?: Record<string, { optional?: boolean }> }
interface Lock { packages: Record<string, LockEntry> }

/** Packages (by install name) whose presence would mean a native store or a network stack came with the core */
const HEAVY = ['classic-level', 'level', 'datastore-level', 'blockstore-level', 'libp2p', 'helia', '@helia/bitswap', '@helia/libp2p', '@libp2p/tcp', '@libp2p/websockets', '@libp2p/memory', '@libp2p/webrtc', '@libp2p/gossipsub', '@libp2p/identify', '@chainsafe/libp2p-noise', '@chainsafe/libp2p-yamux', '@libp2p/crypto']

/** The lock path npm would load `name` from when required by the package installed at `from` */
function resolveInLock (lock: Lock, from: string, name: string): string | undefined {
  let dir = from
  for (;;) {
    const candidate = `${dir === '' ? '' : `${dir}/`}node_modules/${name}`
    if (lock.packages[candidate] != null) return candidate
    if (dir === '') return undefined
    const up = dir.lastIndexOf('/node_modules/')
    dir = up < 0 ? '' : dir.slice(0, up)
  }
}

/** Every lock path an install of `names` (as an app's dependencies) brings: dependencies, optional ones present, required peers */
function closure (lock: Lock, names: string[]): Set<string> {
  const seen = new Set<string>()
  const visit = (from: string, deps: string[]): void => {
    for (const dep of deps) {
      const at = resolveInLock(lock, from, dep)
      if (at == null || seen.has(at)) continue
      seen.add(at)
      const entry = lock.packages[at]
      const required = Object.keys(entry.peerDependencies ?? {}).filter(p => entry.peerDependenciesMeta?.[p]?.optional !== true)
      visit(at, [...Object.keys(entry.dependencies ?? {}), ...Object.keys(entry.optionalDependencies ?? {}), ...required])
    }
  }
  visit('', names)
  return seen
}

/** The install name of a lock path (`node_modules/a/node_modules/@s/b` → `@s/b`) */
function installName (lockPath: string): string {
  return lockPath.slice(lockPath.lastIndexOf('node_modules/') + 'node_modules/'.length)
}

/** Links this checkout's top-level copy of each package into `app`'s node_modules (nested copies come inside) */
async function link (app: string, lockPaths: Iterable<string>): Promise<void> {
  for (const at of lockPaths) {
    if (at.indexOf('node_modules/') !== at.lastIndexOf('node_modules/')) continue
    const name = installName(at)
    await mkdir(join(app, 'node_modules', name, '..'), { recursive: true })
    await symlink(join(ROOT, at), join(app, 'node_modules', name))
  }
}

/** Unpacks the tarball as `app`'s node_modules/datastore-crdt and returns its package.json */
async function unpack (app: string, tarball: string): Promise<{ dependencies: Record<string, string>, peerDependencies: Record<string, string>, peerDependenciesMeta: Record<string, { optional?: boolean }>, bin: Record<string, string> }> {
  const installed = join(app, 'node_modules', 'datastore-crdt')
  await mkdir(installed, { recursive: true })
  await run('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'])
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }))
  return JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'))
}

const APP = [
  "import { createCRDTDatastore } from 'datastore-crdt'",
  "import { MemoryDatastore } from 'datastore-core'",
  "import { MemoryBlockstore } from 'blockstore-core'",
  "import { Key } from 'interface-datastore'",
  'const store = await createCRDTDatastore({ datastore: new MemoryDatastore(), blockstore: new MemoryBlockstore() })',
  "await store.put(new Key('/from'), new TextEncoder().encode('the tarball'))",
  "console.log(new TextDecoder().decode(await store.get(new Key('/from'))))",
  'await store.stop()'
].join('\n')

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

  it('the adapters\' dependencies are optional peers, also dev dependencies so a clone runs tests, demo and CLI', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'))
    for (const heavy of HEAVY.filter(name => pkg.peerDependencies[name] != null)) {
      expect(pkg.peerDependenciesMeta[heavy], heavy).to.deep.equal({ optional: true })
      expect(pkg.devDependencies[heavy], heavy).to.equal(pkg.peerDependencies[heavy])
    }
    expect(Object.keys(pkg.peerDependencies)).to.include.members(['helia', '@helia/bitswap', 'datastore-level', 'blockstore-level', '@libp2p/tcp', '@libp2p/gossipsub'])
    expect(Object.keys(pkg.dependencies).filter(dep => HEAVY.includes(dep) || pkg.peerDependencies[dep] != null)).to.deep.equal([])
  })

  it('installing the core alone pulls no LevelDB, libp2p or Helia, and the core runs without them', async () => {
    const app = join(dir.path, 'core-app')
    const pkg = await unpack(app, join(dir.path, pack.filename))
    const lock: Lock = JSON.parse(await readFile(join(ROOT, 'package-lock.json'), 'utf8'))
    const core = closure(lock, Object.keys(pkg.dependencies))
    expect([...core].map(installName).filter(name => HEAVY.includes(name))).to.deep.equal([])
    expect(core.size).to.be.below(120)

    // the app brings its own blockstore, as an app embedding the core would
    await link(app, closure(lock, [...Object.keys(pkg.dependencies), 'blockstore-core']))
    await writeFile(join(app, 'app.js'), APP)
    const flags = ['--preserve-symlinks', '--preserve-symlinks-main']
    const imported = await run(process.execPath, [...flags, 'app.js'], { cwd: app })
    expect(imported.stdout.trim()).to.equal('the tarball')

    // the node entry needs the peers, which this app did not install
    await writeFile(join(app, 'node-entry.js'), "await import('datastore-crdt/node')")
    const failed = await run(process.execPath, [...flags, 'node-entry.js'], { cwd: app }).then(() => undefined, (err: Error & { stderr: string }) => err)
    expect(failed?.stderr).to.match(/ERR_MODULE_NOT_FOUND/)
  })

  it('an app with the tarball and the optional peers installed imports the package and runs the CLI', async () => {
    const app = join(dir.path, 'app')
    const pkg = await unpack(app, join(dir.path, pack.filename))
    const optional = Object.keys(pkg.peerDependencies).filter(p => pkg.peerDependenciesMeta[p]?.optional === true)
    await link(app, [...Object.keys(pkg.dependencies), ...optional].map(dep => `node_modules/${dep}`))
    await writeFile(join(app, 'app.js'), APP)
    const imported = await run(process.execPath, ['app.js'], { cwd: app })
    expect(imported.stdout.trim()).to.equal('the tarball')

    const bin = join(app, 'node_modules', 'datastore-crdt', pkg.bin['datastore-crdt'])
    const help = await run(process.execPath, [bin, '--help'], { cwd: app })
    expect(help.stdout).to.include('Usage: datastore-crdt')
    const data = join(dir.path, 'cli-data')
    await run(process.execPath, [bin, '--data', data, 'put', '/cli', 'works'], { cwd: app })
    const got = await run(process.execPath, [bin, '--data', data, '--json', 'get', '/cli'], { cwd: app })
    expect(JSON.parse(got.stdout)).to.deep.equal({ ok: true, found: true, value: 'works' })
  })
})
