import { spawn, spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { CLI_PATH, ReplicaProcess } from '../src/cli/process.js'
import { tempDir } from './fixtures/stores.js'

const DEMO_PATH = fileURLToPath(new URL('../src/cli/demo.js', import.meta.url))

async function run (args: string[], input = '', env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  child.stdin.end(input)
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
  const code = await new Promise<number | null>(resolve => child.on('exit', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

describe('command-line replica', function () {
  this.timeout(120_000)
  let dir: Awaited<ReturnType<typeof tempDir>>
  const replicas: ReplicaProcess[] = []

  beforeEach(async () => { dir = await tempDir('crdt-cli') })
  afterEach(async () => {
    await Promise.all(replicas.splice(0).map(async r => r.quit()))
    await dir.remove()
  })

  it('prints usage with --help and refuses unknown options', async () => {
    const help = await run([CLI_PATH, '--help'])
    expect(help.code).to.equal(0)
    expect(help.stdout).to.include('Usage: datastore-crdt')
    const bad = await run([CLI_PATH, '--no-such-option'])
    expect(bad.code).to.equal(2)
    expect(bad.stderr).to.include('no-such-option')
  })

  it('runs one command and exits, keeping data and identity in the data dir', async () => {
    const data = `${dir.path}/one`
    const put = await run([CLI_PATH, '--data', data, 'put', '/greeting', 'hello world'])
    expect(put.code).to.equal(0)
    const get = await run([CLI_PATH, '--data', data, '--json', 'get', '/greeting'])
    expect(JSON.parse(get.stdout)).to.deep.equal({ ok: true, found: true, value: 'hello world' })
    const a = await run([CLI_PATH, '--data', data, '--json', 'addrs'])
    const b = await run([CLI_PATH, '--data', data, '--json', 'addrs'])
    expect(JSON.parse(a.stdout).peerId).to.equal(JSON.parse(b.stdout).peerId)
    const missing = await run([CLI_PATH, '--data', data, 'get', '/nothing'])
    expect(missing.stdout.trim()).to.equal('(not found)')
  })

  it('two replicas converge through the non-interactive mode', async () => {
    const topic = `cli-test-${Math.random().toString(36).slice(2)}`
    const a = await ReplicaProcess.start({ data: `${dir.path}/a`, topic, rebroadcast: 300 })
    replicas.push(a)
    const b = await ReplicaProcess.start({ data: `${dir.path}/b`, topic, rebroadcast: 300, peers: [a.addrs[0]] })
    replicas.push(b)
    expect(a.addrs[0]).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
    await a.must('put /from/a 1')
    expect((await a.must('batch')).ok).to.equal(true)
    await a.must('put /batch/x x')
    await a.must('put /batch/y y')
    expect((await a.must('commit')).ops).to.equal(2)
    await b.must('put /from/b 2')
    await b.must('wait /batch/y y 30000')
    await b.must('wait /from/a 1 30000')
    await a.must('wait /from/b 2 30000')
    await b.must('delete /from/a')
    const deadline = Date.now() + 30_000
    let la: unknown, lb: unknown
    while (Date.now() < deadline) {
      la = (await a.must('list')).entries
      lb = (await b.must('list')).entries
      if (JSON.stringify(la) === JSON.stringify(lb) && (la as unknown[]).length === 3) break
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    expect(la).to.deep.equal([['/batch/x', 'x'], ['/batch/y', 'y'], ['/from/b', '2']])
    expect(lb).to.deep.equal(la)
    expect((await a.run('nonsense')).ok).to.equal(false)
    expect((await b.must('stats')).dirty).to.equal(false)
  })

  it('the interactive shell works on a pseudo-terminal', async function () {
    if (spawnSync('script', ['--version']).status !== 0) {
      throw new Error('the `script` command (util-linux) is needed to drive the shell on a pseudo-terminal')
    }
    const data = `${dir.path}/shell`
    const child = spawn('script', ['-qec', `${process.execPath} ${CLI_PATH} --data ${data}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    const waitFor = async (text: string): Promise<void> => {
      const deadline = Date.now() + 30_000
      while (!out.includes(text) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
      if (!out.includes(text)) throw new Error(`shell never printed ${text}: ${out}`)
    }
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    try {
      await waitFor('crdt> ')
      child.stdin.write('put /shell/k "spaced value"\n')
      await waitFor('ok (')
      child.stdin.write('get /shell/k\n')
      await waitFor('spaced value')
      child.stdin.write('list /shell\n')
      await waitFor('/shell/k = spaced value')
      child.stdin.write('exit\n')
      const code = await new Promise(resolve => child.on('exit', resolve))
      expect(code).to.equal(0)
      expect(out).to.include('bye')
    } finally {
      clearTimeout(killer)
      child.kill('SIGKILL')
    }
  })

  it('npm run demo: three replicas agree and the demo exits 0', async () => {
    const demo = await run([DEMO_PATH])
    expect(demo.stderr).to.equal('')
    expect(demo.code).to.equal(0)
    expect(demo.stdout).to.include('all three replicas agree')
    expect(demo.stdout).to.include('same heads on all three: yes')
  })
})
