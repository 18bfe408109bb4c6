/**
 * Finds and launches a real headless Chromium that needs nothing but npm:
 * the binary ships inside the `@sparticuz/chromium` tarball, and
 * `playwright-core` drives it (no browser download ever happens).
 *
 * Invariants:
 * - The binary is unpacked once into the temp dir (`/tmp/chromium`); on
 *   Debian-like systems the NSS/NSPR libraries the binary lacks are unpacked
 *   from the package's `bin/al2023.tar.br` and put on `LD_LIBRARY_PATH` of
 *   the browser process only: this process's environment is left as it was,
 *   so child processes of other tests do not inherit them.
 * - Only the flags we need are passed; web security (CORS, same-origin)
 *   stays on.
 * - Where the binary cannot run at all (anything but x64 Linux),
 *   `launchChromium` returns `{ notRun }` with the reason instead of a browser.
 */

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser } from 'playwright-core'

/** Flags for a headless run as root with no network access */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
]

/** Environment keys `setupLambdaEnvironment` sets, kept for the browser process only */
const ENV_KEYS = ['LD_LIBRARY_PATH', 'FONTCONFIG_PATH', 'HOME'] as const

export type Launched = { browser: Browser, version: string } | { notRun: string }

/** Why the bundled binary cannot run here, or undefined when it can */
export function cannotRun (): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `the Chromium inside @sparticuz/chromium is built for x64 Linux only, this is ${process.platform}/${process.arch}`
  }
  return undefined
}

/**
 * Unpacks the bundled Chromium (and its NSS/NSPR libraries) and returns the
 * binary's path and the environment to launch it with.
 */
export async function prepareChromium (): Promise<{ executablePath: string, env: Record<string, string> }> {
  const { default: Chromium } = await import('@sparticuz/chromium')
  // inflate and setupLambdaEnvironment are not on the package's export map in
  // the version we pin, so they are loaded from beside its entry file
  const entry = import.meta.resolve('@sparticuz/chromium')
  const { inflate } = await import(new URL('lambdafs.js', entry).href)
  const { setupLambdaEnvironment } = await import(new URL('helper.js', entry).href)
  const executablePath = await Chromium.executablePath()
  const binDir = fileURLToPath(new URL('../../bin/', entry))
  const libs: string = await inflate(join(binDir, 'al2023.tar.br'))
  if (!existsSync(join(libs, 'lib'))) {
    throw new Error(`unpacking ${join(binDir, 'al2023.tar.br')} gave no lib folder in ${libs}`)
  }
  const saved = Object.fromEntries(ENV_KEYS.map(k => [k, process.env[k]]))
  setupLambdaEnvironment(join(libs, 'lib'))
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined) env[k] = v
  }
  for (const k of ENV_KEYS) {
    if (saved[k] === undefined) delete process.env[k]
    else process.env[k] = saved[k]
  }
  return { executablePath, env }
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
