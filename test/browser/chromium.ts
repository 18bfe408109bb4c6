/**
 * Finds and launches a real headless Chromium that needs nothing but npm:
 * the binary ships inside the `@sparticuz/chromium` tarball, and
 * `playwright-core` drives it (no browser download ever happens).
 *
 * Invariants:
 * - Only the package's public parts are used: its default export
 *   (`executablePath(binDir)`) and the files it declares in `bin/`, found
 *   from its own package.json (never modules beside its entry file, which
 *   its export map does not offer and a minor release may move).
 * - The binary is unpacked once into the temp dir (`<tmpdir>/chromium`,
 *   the package's own place); the NSS/NSPR libraries it lacks on Debian-like
 *   systems (`bin/al2023.tar.br`) and the fonts are unpacked into a folder
 *   of ours (`<tmpdir>/datastore-crdt-chromium-<version>`), first
 *   into a private temp folder and then renamed into place, so two first
 *   runs at once never see half of them.
 * - Fonts: the package's fonts.conf names `/tmp/fonts` whatever TMPDIR is,
 *   and it skips unpacking them once its binary exists; we unpack
 *   `bin/fonts.tar.br` into our folder and write a fonts.conf naming it, so
 *   text renders with any TMPDIR.
 * - `LD_LIBRARY_PATH`, `FONTCONFIG_PATH` (and `HOME` when unset) are set for
 *   the browser process only: this process's environment is never changed,
 *   so child processes of other tests do not inherit them.
 * - Unpacking happens once per process (the promise is shared).
 * - Only the flags we need are passed; web security (CORS, same-origin)
 *   stays on.
 * - Where the binary cannot run at all (anything but x64 Linux),
 *   `launchChromium` returns `{ notRun }` with the reason instead of a browser.
 */

import { spawn } from 'node:child_process'
import { createReadStream, existsSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createBrotliDecompress } from 'node:zlib'
import type { Browser, BrowserContext } from 'playwright-core'

/** Flags for a headless run as root with no network access */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

const PACKAGE = '@sparticuz/chromium'

/** Files of the package's `bin/` we use (all declared in its `files`) */
const BIN_FILES = ['chromium.br', 'fonts.tar.br', 'swiftshader.tar.br', 'al2023.tar.br']

/** Libraries the binary needs that Debian-like systems may lack; all in al2023.tar.br */
const NEEDED_LIBS = ['libnss3.so', 'libnssutil3.so', 'libnspr4.so', 'libplc4.so', 'libplds4.so']

export type Launched = { browser: Browser, version: string } | { notRun: string }

/** Why the bundled binary cannot run here, or undefined when it can */
export function cannotRun (): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `the Chromium inside ${PACKAGE} is built for x64 Linux only, this is ${process.platform}/${process.arch}`
  }
  return undefined
}

/** The installed package's root folder and version, found from its own package.json */
export function chromiumPackage (): { root: string, version: string, binDir: string } {
  let entry: string
  try {
    entry = fileURLToPath(import.meta.resolve(PACKAGE))
  } catch (err: any) {
    throw new Error(`${PACKAGE} is not installed (it is a devDependency: run npm install): ${String(err.message)}`)
  }
  // walk up from the entry to the package.json that names the package
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (!existsSync(manifest)) continue
    const { name, version } = JSON.parse(readFileSync(manifest, 'utf8'))
    if (name !== PACKAGE) continue
    const binDir = join(dir, 'bin')
    const missing = BIN_FILES.filter(f => !existsSync(join(binDir, f)))
    if (missing.length > 0) {
      throw new Error(`${PACKAGE} ${String(version)} in ${dir} lacks bin/${missing.join(', bin/')}: reinstall it, or pin a version that ships them`)
    }
    return { root: dir, version, binDir }
  }
  throw new Error(`no package.json naming ${PACKAGE} above ${entry}`)
}

/** Unpacks a Brotli-compressed tarball into `dir` with the system's tar */
async function untarBrotli (file: string, dir: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const tar = spawn('tar', ['-x', '--no-same-owner', '-f', '-', '-C', dir], { stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    tar.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    tar.on('error', reject)
    tar.on('close', code => {
      if (code === 0) resolve()
      else reject(new Error(`tar could not unpack ${file} (exit ${String(code)}): ${stderr}`))
    })
    const source = createReadStream(file)
    const brotli = createBrotliDecompress()
    source.on('error', reject)
    brotli.on('error', reject)
    source.pipe(brotli).pipe(tar.stdin)
  })
}

/**
 * Unpacks `tarball` into `target` once: into a private folder first, then
 * renamed into place, so a concurrent first run never sees a partial folder.
 */
async function unpackOnce (tarball: string, target: string, complete: (dir: string) => boolean): Promise<void> {
  if (complete(target)) return
  await mkdir(dirname(target), { recursive: true })
  const scratch = await mkdtemp(`${target}.unpacking-`)
  try {
    await untarBrotli(tarball, scratch)
    if (!complete(scratch)) throw new Error(`unpacking ${tarball} did not give what the browser needs`)
    await rm(target, { recursive: true, force: true })
    await rename(scratch, target).catch(async (err) => {
      // another run renamed its copy first: use that one
      if (!complete(target)) throw err
    })
  } finally {
    await rm(scratch, { recursive: true, force: true })
  }
}

/** A fontconfig file naming the folder the package really unpacked its fonts to */
function fontsConf (fontsDir: string, cacheDir: string): string {
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
  return `<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>${esc(fontsDir)}</dir>
  <cachedir>${esc(cacheDir)}</cachedir>
</fontconfig>
`
}

let prepared: Promise<{ executablePath: string, env: Record<string, string> }> | undefined

/**
 * Unpacks the bundled Chromium (and its NSS/NSPR libraries and fonts) and
 * returns the binary's path and the environment to launch it with. Done
 * once per process.
 */
export async function prepareChromium (): Promise<{ executablePath: string, env: Record<string, string> }> {
  prepared ??= (async () => {
    const { binDir, version } = chromiumPackage()
    const { default: Chromium } = await import(PACKAGE)
    // unpacks chromium.br to <tmpdir>/chromium and swiftshader.tar.br to <tmpdir> (once)
    const executablePath: string = await Chromium.executablePath(binDir)
    const ours = join(tmpdir(), `datastore-crdt-chromium-${String(version)}`)
    const libs = join(ours, 'al2023')
    await unpackOnce(join(binDir, 'al2023.tar.br'), libs, dir => NEEDED_LIBS.every(l => existsSync(join(dir, 'lib', l))))
    // our own copy of the fonts: the package skips them when its binary was unpacked before
    const fonts = join(ours, 'fonts')
    await unpackOnce(join(binDir, 'fonts.tar.br'), fonts, dir => existsSync(join(dir, 'fonts', 'Open_Sans', 'OpenSans-Regular.ttf')))
    const fontconfig = join(ours, 'fontconfig')
    await mkdir(fontconfig, { recursive: true })
    await writeFile(join(fontconfig, 'fonts.conf'), fontsConf(join(fonts, 'fonts'), join(ours, 'fonts-cache')))

    const env: Record<string, string> = {}
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined) env[k] = v
    }
    env.LD_LIBRARY_PATH = [join(libs, 'lib'), ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean)].join(':')
    env.FONTCONFIG_PATH = fontconfig
    env.HOME ??= tmpdir()
    return { executablePath, env }
  })()
  try {
    return await prepared
  } catch (err) {
    prepared = undefined
    throw err
  }
}

/** Launches the bundled Chromium headless, or says why it cannot run here */
export async function launchChromium (): Promise<Launched> {
  const reason = cannotRun()
  if (reason !== undefined) return { notRun: reason }
  const { chromium } = await import('playwright-core')
  const { executablePath, env } = await prepareChromium()
  const browser = await chromium.launch({ executablePath, env, headless: true, args: CHROMIUM_ARGS })
  return { browser, version: browser.version() }
}

export type LaunchedPersistent = { context: BrowserContext } | { notRun: string }

/**
 * Launches the bundled Chromium headless on the browser profile in
 * `userDataDir` (IndexedDB and everything else an origin stores persist
 * there across launches), or says why it cannot run here.
 */
export async function launchPersistentChromium (userDataDir: string): Promise<LaunchedPersistent> {
  const reason = cannotRun()
  if (reason !== undefined) return { notRun: reason }
  const { chromium } = await import('playwright-core')
  const { executablePath, env } = await prepareChromium()
  const context = await chromium.launchPersistentContext(userDataDir, { executablePath, env, headless: true, args: CHROMIUM_ARGS })
  return { context }
}
