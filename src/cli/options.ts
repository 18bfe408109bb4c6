/**
 * Command-line options of the replica, parsed with node:util's parseArgs.
 */

import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { parseWriter } from '../trust/writers.js'

export interface CLIOptions {
  data: string
  listen: string[]
  topic: string
  peers: string[]
  namespace?: string
  rebroadcast: number
  script: boolean
  json: boolean
  help: boolean
  /** Before the command or shell, wait until what peers announce is merged */
  waitSync: boolean
  /** Bound (ms) of --wait-sync and of a one-shot write's wait for a peer; 0 = do not wait */
  timeout: number
  /** A single command to run instead of a shell */
  command: string[]
  /** Trusted mode: peer IDs allowed to write (empty = open mode) */
  writers: string[]
}

export const DEFAULT_DATA_DIR = '.datastore-crdt'
export const DEFAULT_TOPIC = 'datastore-crdt'
export const DEFAULT_CLI_LISTEN = '/ip4/127.0.0.1/tcp/0'
export const DEFAULT_CLI_REBROADCAST = 5_000
export const DEFAULT_CLI_TIMEOUT = 15_000

/** Exit codes of the CLI */
export const EXIT = {
  OK: 0,
  /** the command failed */
  FAILED: 1,
  /** bad options or arguments */
  USAGE: 2,
  /** a one-shot `get` of a key that does not exist */
  NOT_FOUND: 3
} as const

export const USAGE = `Usage: datastore-crdt [options] [command ...]

Starts a replica of a datastore-crdt store: state and blocks in LevelDB under
the data directory, libp2p on 127.0.0.1, heads over gossipsub, blocks over
bitswap. Without a command it opens an interactive shell; with one it runs it
and exits; with --script it reads commands from stdin (one per line).

Options:
  -d, --data <dir>        data directory (default: ./${DEFAULT_DATA_DIR})
  -l, --listen <addr>     multiaddr to listen on, repeatable (default: ${DEFAULT_CLI_LISTEN});
                          /ip4/127.0.0.1/tcp/0/ws listens on WebSockets for browser replicas
  -t, --topic <name>      pubsub topic shared by the replicas (default: ${DEFAULT_TOPIC})
  -p, --peer <addr>       multiaddr of a replica to dial at start, repeatable
  -n, --namespace <key>   where CRDT state lives in the datastore (default: /datastore-crdt/<topic>)
      --rebroadcast <ms>  how often to re-announce heads (default: ${DEFAULT_CLI_REBROADCAST})
      --writer <peer id>  trusted mode: a replica allowed to write, repeatable; all
                          others are read-only and heads they sign are refused. The
                          list is stored: a later start without --writer keeps it
                          (see the README, "Trusted writers")
  -w, --wait-sync         first wait until the heads peers announce are merged
      --timeout <ms>      bound of --wait-sync and of a one-shot write's wait for
                          a peer to fetch it; 0 = no wait (default: ${DEFAULT_CLI_TIMEOUT})
  -s, --script            read commands from stdin, print one result per command
  -j, --json              with --script or a command: print JSON lines
  -h, --help              this text

A one-shot write with --peer waits until a peer has fetched it, or says it
was stored locally only. Text output escapes control characters in keys,
values and DAG names (they come from other replicas). Exit codes: 0 ok,
1 command failed, 2 bad usage, 3 one-shot get of a missing key.

Examples:
  datastore-crdt --data ./a
  datastore-crdt --data ./b --peer /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo...
  datastore-crdt --data ./a put /hello world
  datastore-crdt --data ./b --peer /ip4/127.0.0.1/tcp/4001/p2p/12D3Koo... --wait-sync get /hello
  echo "list" | datastore-crdt --data ./a --script --json
`

export function parseOptions (argv: string[]): CLIOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      data: { type: 'string', short: 'd' },
      listen: { type: 'string', short: 'l', multiple: true },
      topic: { type: 'string', short: 't' },
      peer: { type: 'string', short: 'p', multiple: true },
      namespace: { type: 'string', short: 'n' },
      rebroadcast: { type: 'string' },
      script: { type: 'boolean', short: 's' },
      json: { type: 'boolean', short: 'j' },
      help: { type: 'boolean', short: 'h' },
      'wait-sync': { type: 'boolean', short: 'w' },
      timeout: { type: 'string' },
      writer: { type: 'string', multiple: true }
    }
  })
  const rebroadcast = Number(values.rebroadcast ?? DEFAULT_CLI_REBROADCAST)
  if (!Number.isFinite(rebroadcast) || rebroadcast <= 0) {
    throw new Error(`--rebroadcast must be a positive number of milliseconds, got ${values.rebroadcast}`)
  }
  const timeout = Number(values.timeout ?? DEFAULT_CLI_TIMEOUT)
  if (!Number.isFinite(timeout) || timeout < 0) {
    throw new Error(`--timeout must be a number of milliseconds >= 0, got ${values.timeout}`)
  }
  return {
    data: resolve(values.data ?? DEFAULT_DATA_DIR),
    listen: values.listen ?? [DEFAULT_CLI_LISTEN],
    topic: values.topic ?? DEFAULT_TOPIC,
    peers: values.peer ?? [],
    namespace: values.namespace,
    rebroadcast,
    script: values.script ?? false,
    json: values.json ?? false,
    help: values.help ?? false,
    waitSync: values['wait-sync'] ?? false,
    timeout,
    command: positionals,
    // checked here so a bad peer ID is a usage error
    writers: (values.writer ?? []).map(id => {
      try {
        return parseWriter(id)
      } catch (err: any) {
        throw new Error(`--writer: ${String(err.message)}`)
      }
    })
  }
}
