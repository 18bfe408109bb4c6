/**
 * Runs the built specs (dist/test) as two mocha processes side by side, so
 * `npm test` fits its time budget on a 2-core machine:
 *
 * - "processes": the specs that mostly wait on child processes and real
 *   sockets (go-ds-crdt interop, the CLI, chaos, README examples, npm pack,
 *   browsers, trusted writers' CLI);
 * - "in-process": every other spec.
 *
 * Each process loads `aa-resources.spec.js` first and `zz-leaks.spec.js`
 * last, so each checks its own leaks. The in-process group prints as it
 * goes; the other group's output is held and printed, whole, once both have
 * ended (so the two never interleave). The exit code is non-zero if either
 * group failed. Arguments are passed to both mocha processes (e.g. `--bail`).
 *
 * `npm test` runs it after the build; `npx mocha dist/test/x.spec.js` still
 * runs one spec alone.
 */

import { spawn } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const dist = join(root, 'dist', 'test')
const mocha = createRequire(import.meta.url).resolve('mocha/bin/mocha.js')

/** Specs (relative to dist/test) that belong to the "processes" group */
const PROCESS_SPECS = [
  /^interop\//,
  /^cli(-[a-z]+)?\.spec\.js$/,
  /^chaos\.spec\.js$/,
  /^readme\.spec\.js$/,
  /^pack\.spec\.js$/,
  /^browser(-[a-z]+)?\.spec\.js$/,
  /^trusted\.spec\.js$/,
  /^node-version\.spec\.js$/
]
const FIRST = 'aa-resources.spec.js'
const LAST = 'zz-leaks.spec.js'

const specs = readdirSync(dist, { recursive: true })
  .map(f => relative(dist, join(dist, String(f))).split('\\').join('/'))
  .filter(f => f.endsWith('.spec.js') && f !== FIRST && f !== LAST)
  .sort()
const processes = specs.filter(f => PROCESS_SPECS.some(re => re.test(f)))
const inProcess = specs.filter(f => !processes.includes(f))
const args = process.argv.slice(2)

/**
 * Starts one mocha process over `files` (framed by the first and last specs).
 * With `hold`, its output is kept and handed back instead of printed.
 *
 * @param {string} name - the group's name, for the summary
 * @param {string[]} files - specs relative to dist/test
 * @param {boolean} hold - keep the output until the end
 */
function run (name, files, hold) {
  const child = spawn(process.execPath, [mocha, ...args, ...[FIRST, ...files, LAST].map(f => join(dist, f))], {
    cwd: root,
    stdio: ['ignore', hold ? 'pipe' : 'inherit', hold ? 'pipe' : 'inherit']
  })
  const chunks = []
  if (hold) {
    child.stdout.on('data', chunk => chunks.push(chunk))
    child.stderr.on('data', chunk => chunks.push(chunk))
  }
  const done = new Promise(resolve => {
    child.on('close', (code, signal) => { resolve({ name, code: code ?? (signal != null ? 1 : 0), signal, output: Buffer.concat(chunks).toString() }) })
  })
  return { child, done }
}

const groups = [
  run('in-process', inProcess, false),
  run('processes', processes, true)
]
const stop = signal => { for (const { child } of groups) child.kill(signal) }
process.on('SIGINT', () => { stop('SIGINT') })
process.on('SIGTERM', () => { stop('SIGTERM') })

const results = await Promise.all(groups.map(async g => g.done))
for (const r of results) {
  if (r.output !== '') process.stdout.write(`\n===== ${r.name} specs (${processes.length} files, run alongside) =====\n${r.output}`)
}
for (const r of results) {
  process.stdout.write(`${r.name}: ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code}${r.signal != null ? `, ${r.signal}` : ''})`}\n`)
}
process.exitCode = results.some(r => r.code !== 0) ? 1 : 0
