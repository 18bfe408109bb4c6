/**
 * Builds the go-ds-crdt benchmark program (this folder, its own go.mod)
 * into <repo>/.cache/bench/ (git-ignored). The first build downloads the
 * pinned modules from the Go module proxy and compiles libp2p: minutes;
 * later builds come from Go's caches in seconds. Node built-ins only.
 *
 * buildGoPeer() resolves to { binary } or to { error } saying why not
 * (no Go on PATH, build failed, over its time limit): never rejects.
 */

import { spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..', '..', '..')

/** Where the binary goes (.cache/ is git-ignored) */
export const GO_BINARY = join(ROOT, '.cache', 'bench', 'go-ds-crdt-bench')

/** Runs `go <argv>` in this folder; resolves with { code } or { error } */
function go (argv, limitS) {
  return new Promise(resolve => {
    let child
    try {
      child = spawn('go', argv, { cwd: HERE, stdio: ['ignore', 'inherit', 'inherit'] })
    } catch (err) {
      resolve({ error: err.message })
      return
    }
    const timer = setTimeout(() => {
      try { child.kill('SIGKILL') } catch {}
      resolve({ error: `go ${argv[0]} took over ${limitS} s` })
    }, limitS * 1000)
    child.once('error', err => {
      clearTimeout(timer)
      resolve({ error: err.code === 'ENOENT' ? 'Go is not installed (no `go` on PATH)' : `go ${argv[0]}: ${err.message}` })
    })
    child.once('exit', code => { clearTimeout(timer); resolve({ code }) })
  })
}

export async function buildGoPeer ({ limitS = 900 } = {}) {
  await mkdir(dirname(GO_BINARY), { recursive: true })
  const version = await go(['version'], 30)
  if (version.error != null) return { error: version.error }
  if (version.code !== 0) return { error: `\`go version\` exited with code ${version.code}` }
  const built = await go(['build', '-o', GO_BINARY, '.'], limitS)
  if (built.error != null) return { error: built.error }
  if (built.code !== 0) return { error: `go build failed (exit ${built.code}; its output is above)` }
  return { binary: GO_BINARY }
}
