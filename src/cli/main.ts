/**
 * `datastore-crdt`: a command-line replica. See `datastore-crdt --help`.
 * Loaded by `index.ts` once the Node.js version is known to be recent enough.
 */

import { appendFile, chmod, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { COMMANDS, promptOf, runCommand, runWords } from './commands.js'
import { EXIT, parseOptions, USAGE } from './options.js'
import { SyncProgress } from './progress.js'
import { confirmWrite, startReplica, waitForSync } from './replica.js'
import type { CommandContext, CommandResult } from './commands.js'
import type { CLIOptions } from './options.js'
import type { Replica } from './replica.js'

const HISTORY_FILE = 'history'
const HISTORY_SIZE = 500

function print (result: CommandResult | undefined, json: boolean): void {
  if (result == null) return
  if (json) {
    process.stdout.write(JSON.stringify({ ok: result.ok, ...(result.data ?? {}), ...(result.ok ? {} : { error: result.text }) }) + '\n')
  } else if (result.ok) {
    process.stdout.write(result.text + '\n')
  } else {
    process.stderr.write(`error: ${result.text}\n`)
  }
}

function banner (replica: Replica): string {
  const addrs = replica.node.libp2p.getMultiaddrs().map(String)
  const stats = replica.store.stats()
  return [
    `replica ${replica.node.libp2p.peerId.toString()}`,
    'listening on (give one of these to another replica with --peer or connect):',
    ...addrs.map(a => `  ${a}`),
    ...(stats.writers == null ? [] : [`trusted mode, ${stats.writers.length} writer(s): this replica ${stats.canWrite ? 'is a writer' : 'is READ-ONLY (it replicates, but cannot write)'}`]),
    `${stats.heads.length} heads, height ${stats.maxHeight}. Type help for commands.`
  ].join('\n')
}

/** Reads commands from stdin, one per line, and prints one result per command */
async function scriptMode (ctx: CommandContext, options: CLIOptions): Promise<void> {
  if (options.json) {
    process.stdout.write(JSON.stringify({ event: 'ready', peerId: ctx.node.libp2p.peerId.toString(), addrs: ctx.node.libp2p.getMultiaddrs().map(String) }) + '\n')
  } else {
    process.stderr.write(banner({ node: ctx.node, store: ctx.store, stop: async () => {} }) + '\n')
  }
  const rl = createInterface({ input: process.stdin, terminal: false })
  for await (const line of rl) {
    const result = await runCommand(ctx, line)
    print(result, options.json)
    if (result?.exit === true) break
  }
  rl.close()
}

/** The interactive shell: completion, persistent history, Ctrl-C/Ctrl-D to quit */
async function shell (ctx: CommandContext, replica: Replica, options: CLIOptions): Promise<void> {
  const historyPath = join(options.data, HISTORY_FILE)
  // the history holds typed values: private to the user, like the data directory
  await chmod(historyPath, 0o600).catch(() => {})
  const history = await readFile(historyPath, 'utf8').then(t => t.split('\n').filter(Boolean).reverse().slice(0, HISTORY_SIZE), () => [])
  let redraw = (): void => {}
  const progress = new SyncProgress(replica.store, {
    write: (t) => process.stderr.write(t),
    tty: process.stderr.isTTY === true,
    // the notice lands where the prompt was: draw it again, keeping what was typed
    onNotice: () => { redraw() }
  })
  const rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    history,
    historySize: HISTORY_SIZE,
    prompt: promptOf(replica.store),
    completer: (line: string) => {
      const names = Object.keys(COMMANDS)
      const hits = names.filter(n => n.startsWith(line.trim()))
      return [hits.length > 0 ? hits : names, line.trim()]
    }
  })
  redraw = () => {
    rl.setPrompt(promptOf(replica.store))
    rl.prompt(true)
  }
  process.stdout.write(banner(replica) + '\n')
  progress.start()
  rl.prompt()
  await new Promise<void>(resolve => {
    let busy = Promise.resolve()
    rl.on('line', line => {
      busy = busy.then(async () => {
        if (line.trim() !== '') await appendFile(historyPath, line + '\n', { mode: 0o600 }).catch(() => {})
        const result = await runCommand(ctx, line)
        print(result, false)
        if (result?.exit === true) rl.close()
        else {
          rl.setPrompt(promptOf(replica.store))
          rl.prompt()
        }
      })
    })
    rl.on('SIGINT', () => { rl.close() })
    rl.on('close', () => { void busy.then(resolve) })
  })
  progress.stop()
}

async function main (): Promise<number> {
  let options: CLIOptions
  try {
    options = parseOptions(process.argv.slice(2))
  } catch (err: any) {
    process.stderr.write(`${err.message}\n\n${USAGE}`)
    return EXIT.USAGE
  }
  if (options.help) {
    process.stdout.write(USAGE)
    return 0
  }

  const warn = (text: string): void => { process.stderr.write(`warning: ${text}\n`) }
  const replica = await startReplica(options, { warn })
  const ctx: CommandContext = { store: replica.store, node: replica.node, batchOps: 0 }
  const onSignal = (): void => {
    void replica.stop().finally(() => process.exit(130))
  }
  process.once('SIGTERM', onSignal)
  let code: number = EXIT.OK
  try {
    if (options.waitSync) {
      await waitForSync(replica, options, { info: (text: string) => { process.stderr.write(`${text}\n`) }, warn })
    }
    if (options.command.length > 0) {
      // the shell has split the words already: no second round of quoting
      const result = await runWords(ctx, options.command)
      const written = result?.ok === true && result.wrote === true ? replica.store.heads() : []
      if (result != null && written.length > 0) {
        // the head of the DAG written to: a peer that merged it has the write
        await confirmWrite(replica, options, result, written.reduce((a, b) => b.height > a.height ? b : a).cid)
      }
      print(result, options.json)
      code = result?.ok === false ? (result.usage === true ? EXIT.USAGE : EXIT.FAILED) : result?.data?.found === false ? EXIT.NOT_FOUND : EXIT.OK
    } else if (options.script || process.stdin.isTTY !== true) {
      process.once('SIGINT', onSignal)
      await scriptMode(ctx, options)
    } else {
      await shell(ctx, replica, options)
    }
  } finally {
    process.removeListener('SIGTERM', onSignal)
    await replica.stop()
  }
  return code
}

main().then(code => { process.exitCode = code }, (err) => {
  process.stderr.write(`datastore-crdt: ${err.message}\n`)
  process.exitCode = 1
})
