import { spawn, spawnSync } from 'node:child_process'
import { chmod, stat } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { expect } from 'aegir/chai'
import { CLI_PATH, ReplicaProcess } from '../src/cli/process.js'
import { tempDir } from './fixtures/stores.js'

const DEMO_PATH = fileURLToPath(new URL('../examples/demo/demo.js', import.meta.url))

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
      // the data directory and the history (typed values) are private to the user
      expect((await stat(data)).mode & 0o777).to.equal(0o700)
      expect((await stat(`${data}/history`)).mode & 0o777).to.equal(0o600)
    } finally {
      clearTimeout(killer)
      child.kill('SIGKILL')
    }
  })

  it('exit codes: 3 for a one-shot get of a missing key, 2 for extra arguments; list has a path form', async () => {
    const data = `${dir.path}/codes`
    expect((await run([CLI_PATH, '--data', data, 'get', '/nothing'])).code).to.equal(3)
    const extra = await run([CLI_PATH, '--data', data, 'get', '/a', '/b'])
    expect(extra.code).to.equal(2)
    expect(extra.stderr).to.include('get takes at most 1, got 2')
    const listed = await run([CLI_PATH, '--data', data, '--script', '--json'], [
      'put /a/1 one', 'put /a/1/x below', 'put /a/10 ten', 'list /a/1', 'list /a/1/', 'heads extra', 'get /a/1'
    ].join('\n') + '\n')
    const replies = listed.stdout.trim().split('\n').slice(1).map(l => JSON.parse(l))
    expect(replies[3].entries).to.deep.equal([['/a/1', 'one'], ['/a/1/x', 'below'], ['/a/10', 'ten']])
    expect(replies[4].entries).to.deep.equal([['/a/1', 'one'], ['/a/1/x', 'below']])
    expect(replies[5]).to.include({ ok: false })
    expect(replies[5].error).to.include('heads takes no arguments')
    expect(replies[6]).to.deep.equal({ ok: true, found: true, value: 'one' })
  })

  it('text output escapes control characters; JSON keeps the exact value', async () => {
    const data = `${dir.path}/escape`
    const hostile = 'evil\x1b[2J\x07\u202eend\nline'
    expect((await run([CLI_PATH, '--data', data, '--timeout', '0', 'put', '/k\x1b]0;title\x07', hostile])).code).to.equal(0)
    const text = await run([CLI_PATH, '--data', data, 'get', '/k\x1b]0;title\x07'])
    expect(text.stdout).to.equal('evil\\x1b[2J\\x07\\u202eend\\nline\n')
    const list = await run([CLI_PATH, '--data', data, 'list'])
    expect(list.stdout).to.equal('/k\\x1b]0;title\\x07 = evil\\x1b[2J\\x07\\u202eend\\nline\n')
    // eslint-disable-next-line no-control-regex -- the point: no control character reaches the terminal
    expect(list.stdout).to.not.match(/[\x00-\x09\x0b-\x1f\x7f]/)
    const json = await run([CLI_PATH, '--data', data, '--json', 'get', '/k\x1b]0;title\x07'])
    expect(JSON.parse(json.stdout).value).to.equal(hostile)
  })

  it('files and addresses: a held data directory, a readable peer.key and a non-loopback --listen are reported', async () => {
    const topic = `cli-files-${Math.random().toString(36).slice(2)}`
    const held = `${dir.path}/held`
    const a = await ReplicaProcess.start({ data: held, topic })
    replicas.push(a)
    const second = await run([CLI_PATH, '--data', held, 'list'])
    expect(second.code).to.equal(1)
    expect(second.stderr).to.include(`Another process holds the data directory ${held}`)
    await a.quit()

    await chmod(`${held}/peer.key`, 0o644)
    const loose = await run([CLI_PATH, '--data', held, 'list'])
    expect(loose.code).to.equal(0)
    expect(loose.stderr).to.include(`warning: ${held}/peer.key (this replica's private key) is readable by other users (mode 644)`)

    // TEST-NET-1 is on no interface: the warning comes first, then the listen fails
    const exposed = await run([CLI_PATH, '--data', `${dir.path}/exposed`, '--listen', '/ip4/192.0.2.1/tcp/0', 'list'])
    expect(exposed.stderr).to.include('warning: listening on /ip4/192.0.2.1/tcp/0 exposes this replica beyond this machine')
    const local = await run([CLI_PATH, '--data', `${dir.path}/local`, 'list'])
    expect(local.stderr).to.not.include('warning')
  })

  it('with a peer: one-shot writes wait until it has them, --wait-sync reads what it wrote, a wrong topic and a wrong address are reported', async () => {
    const topic = `cli-peer-${Math.random().toString(36).slice(2)}`
    const a = await ReplicaProcess.start({ data: `${dir.path}/a`, topic, rebroadcast: 300 })
    replicas.push(a)
    for (let i = 0; i < 20; i++) await a.must(`put /seed/${i} v${i}`)

    const put = await run([CLI_PATH, '--data', `${dir.path}/b`, '--topic', topic, '--peer', a.addrs[0], 'put', '/from/b', 'hello'])
    expect(put.code).to.equal(0)
    expect(put.stdout).to.match(new RegExp(`^ok \\(\\d+ ms\\); peer ${a.peerId} has it \\(\\d+ ms\\)\n$`))
    // the peer merged it before the writer exited
    expect(await a.must('get /from/b')).to.deep.include({ found: true, value: 'hello' })

    const synced = await run([CLI_PATH, '--data', `${dir.path}/c`, '--topic', topic, '--peer', a.addrs[0], '--wait-sync', 'get', '/seed/19'])
    expect(synced.stderr).to.match(/in sync: fetched \d+ blocks/)
    expect(synced.stdout).to.equal('v19\n')

    const alone = await run([CLI_PATH, '--data', `${dir.path}/d`, '--topic', topic, 'put', '/alone', 'x'])
    expect(alone.stdout).to.include('stored locally only: no peer is connected')

    const mistyped = await run([CLI_PATH, '--data', `${dir.path}/e`, '--topic', `${topic}-typo`, '--peer', a.addrs[0], '--timeout', '500', 'put', '/typo', 'x'])
    expect(mistyped.stderr).to.include(`none subscribes to topic "${topic}-typo"`)
    expect(mistyped.stdout).to.include('stored locally only: no connected peer had it within 500 ms')

    const b = await ReplicaProcess.start({ data: `${dir.path}/b`, topic, peers: [a.addrs[0]] })
    replicas.push(b)
    const wrong = await b.run(`connect /ip4/127.0.0.1/tcp/1/p2p/${a.peerId}`)
    expect(wrong.ok).to.equal(false)
    const right = await b.must(`connect ${a.addrs[0]}`)
    expect(right.addr).to.equal(a.addrs[0])
  })

  it('npm run demo: three replicas agree and the demo exits 0', async () => {
    const demo = await run([DEMO_PATH])
    expect(demo.stderr).to.equal('')
    expect(demo.code).to.equal(0)
    expect(demo.stdout).to.include('all three replicas agree')
    expect(demo.stdout).to.include('same heads on all three: yes')
  })
})
