/**
 * The replica's command language, shared by the interactive shell and the
 * script mode: one command per line, words split on spaces, "double" or
 * 'single' quotes keep spaces. Each command returns a result that can be
 * shown as text or as one JSON line.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { Key } from 'interface-datastore'
import type { CRDTBatch, HeliaCRDTDatastore, ReplicaNode } from '../index.js'

export interface CommandContext {
  store: HeliaCRDTDatastore
  node: ReplicaNode
  /** The open batch, between `batch` and `commit` */
  batch?: CRDTBatch
  /** Operations in the open batch */
  batchOps: number
}

export interface CommandResult {
  ok: boolean
  /** Human-readable output (may span lines) */
  text: string
  /** Machine-readable fields for script mode */
  data?: Record<string, unknown>
  /** The shell should exit after this */
  exit?: boolean
}

export interface CommandSpec {
  usage: string
  help: string
  run(ctx: CommandContext, args: string[]): Promise<CommandResult>
}

const enc = new TextEncoder()
const dec = new TextDecoder()

function ok (text: string, data?: Record<string, unknown>): CommandResult {
  return { ok: true, text, data }
}

function fail (text: string): CommandResult {
  return { ok: false, text, data: { error: text } }
}

function toKey (s: string): Key {
  return new Key(s.startsWith('/') ? s : `/${s}`)
}

/** Splits a command line into words, honouring quotes */
export function tokenize (line: string): string[] {
  const words: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g
  let m: RegExpExecArray | null
  while ((m = re.exec(line)) != null) {
    words.push(m[1] != null ? m[1].replace(/\\(.)/g, '$1') : m[2] ?? m[3])
  }
  return words
}

async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

export const COMMANDS: Record<string, CommandSpec> = {
  put: {
    usage: 'put <key> <value>',
    help: 'set a key (inside a batch: add to the batch)',
    async run (ctx, [key, ...rest]) {
      if (key == null || rest.length === 0) return fail('usage: put <key> <value>')
      const value = rest.join(' ')
      if (ctx.batch != null) {
        ctx.batch.put(toKey(key), enc.encode(value))
        ctx.batchOps++
        return ok(`batched put ${toKey(key).toString()} (${ctx.batchOps} ops)`, { batched: true })
      }
      const start = performance.now()
      await ctx.store.put(toKey(key), enc.encode(value))
      const ms = Math.round(performance.now() - start)
      return ok(`ok (${ms} ms)`, { key: toKey(key).toString(), ms })
    }
  },
  get: {
    usage: 'get <key>',
    help: 'print the value of a key',
    async run (ctx, [key]) {
      if (key == null) return fail('usage: get <key>')
      if (!(await ctx.store.has(toKey(key)))) return { ok: true, text: '(not found)', data: { found: false } }
      const value = dec.decode(await ctx.store.get(toKey(key)))
      return ok(value, { found: true, value })
    }
  },
  delete: {
    usage: 'delete <key>',
    help: 'remove a key (inside a batch: add to the batch)',
    async run (ctx, [key]) {
      if (key == null) return fail('usage: delete <key>')
      if (ctx.batch != null) {
        ctx.batch.delete(toKey(key))
        ctx.batchOps++
        return ok(`batched delete ${toKey(key).toString()} (${ctx.batchOps} ops)`, { batched: true })
      }
      await ctx.store.delete(toKey(key))
      return ok('ok', { key: toKey(key).toString() })
    }
  },
  list: {
    usage: 'list [prefix]',
    help: 'list keys and values, optionally under a prefix',
    async run (ctx, [prefix]) {
      const entries: Array<[string, string]> = []
      for await (const { key, value } of ctx.store.query({ prefix: prefix == null ? undefined : toKey(prefix).toString() })) {
        entries.push([key.toString(), dec.decode(value)])
      }
      entries.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
      const text = entries.length === 0 ? '(empty)' : entries.map(([k, v]) => `${k} = ${v}`).join('\n')
      return ok(text, { entries })
    }
  },
  batch: {
    usage: 'batch',
    help: 'start a batch: following puts and deletes become one DAG node on commit',
    async run (ctx) {
      if (ctx.batch != null) return fail('a batch is already open: commit or discard it')
      ctx.batch = ctx.store.batch()
      ctx.batchOps = 0
      return ok('batch open: put/delete, then commit (or discard)')
    }
  },
  commit: {
    usage: 'commit',
    help: 'write the open batch',
    async run (ctx) {
      if (ctx.batch == null) return fail('no batch is open')
      const batch = ctx.batch
      const ops = ctx.batchOps
      ctx.batch = undefined
      ctx.batchOps = 0
      const start = performance.now()
      await batch.commit()
      const ms = Math.round(performance.now() - start)
      return ok(`committed ${ops} ops (${ms} ms)`, { ops, ms })
    }
  },
  discard: {
    usage: 'discard',
    help: 'drop the open batch',
    async run (ctx) {
      if (ctx.batch == null) return fail('no batch is open')
      ctx.batch = undefined
      ctx.batchOps = 0
      return ok('batch discarded')
    }
  },
  heads: {
    usage: 'heads',
    help: 'show the DAG heads',
    async run (ctx) {
      const heads = ctx.store.heads().map(h => ({ cid: h.cid.toString(), height: h.height, dagName: h.dagName }))
      const text = heads.length === 0 ? '(no heads)' : heads.map(h => `${h.cid} height ${h.height}${h.dagName === '' ? '' : ` [${h.dagName}]`}`).join('\n')
      return ok(text, { heads })
    }
  },
  stats: {
    usage: 'stats',
    help: 'heads, height, queued jobs, dirty flag',
    async run (ctx) {
      const s = ctx.store.stats()
      const dirty = await ctx.store.isDirty()
      const pending = (await ctx.store.pendingBranches()).length
      const data = { heads: s.heads.length, maxHeight: s.maxHeight, queuedJobs: s.queuedJobs, fetchedBlocks: s.fetchedBlocks, pendingBranches: pending, dirty }
      return ok(Object.entries(data).map(([k, v]) => `${k}: ${String(v)}`).join('\n'), data)
    }
  },
  peers: {
    usage: 'peers',
    help: 'list connected peers',
    async run (ctx) {
      const peers = ctx.node.libp2p.getConnections().map(c => `${c.remoteAddr.toString()}${c.remoteAddr.toString().includes('/p2p/') ? '' : `/p2p/${c.remotePeer.toString()}`}`)
      return ok(peers.length === 0 ? '(no peers)' : peers.join('\n'), { peers })
    }
  },
  connect: {
    usage: 'connect <multiaddr>',
    help: 'dial another replica',
    async run (ctx, [addr]) {
      if (addr == null) return fail('usage: connect <multiaddr>')
      const start = performance.now()
      const conn = await ctx.node.libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(10_000) })
      const ms = Math.round(performance.now() - start)
      return ok(`connected to ${conn.remotePeer.toString()} (${ms} ms)`, { peer: conn.remotePeer.toString(), ms })
    }
  },
  addrs: {
    usage: 'addrs',
    help: 'this replica\'s listen addresses',
    async run (ctx) {
      const addrs = ctx.node.libp2p.getMultiaddrs().map(String)
      return ok(addrs.join('\n'), { peerId: ctx.node.libp2p.peerId.toString(), addrs })
    }
  },
  dag: {
    usage: 'dag',
    help: 'print the DAG (small DAGs only)',
    async run (ctx) {
      const text = await ctx.store.printDAG({ limit: 200 })
      return ok(text === '' ? '(empty DAG)' : text, { dag: text })
    }
  },
  wait: {
    usage: 'wait <key> [value] [timeout-ms]',
    help: 'wait until a key exists (with that value), for scripts',
    async run (ctx, [key, value, timeout]) {
      if (key == null) return fail('usage: wait <key> [value] [timeout-ms]')
      const deadline = Date.now() + Number(timeout ?? 30_000)
      for (let i = 0; i < 1_000_000; i++) {
        if (await ctx.store.has(toKey(key))) {
          const current = dec.decode(await ctx.store.get(toKey(key)))
          if (value == null || value === current) return ok(current, { value: current })
        }
        if (Date.now() > deadline) break
        await sleep(20)
      }
      return fail(`timed out waiting for ${toKey(key).toString()}`)
    }
  },
  help: {
    usage: 'help',
    help: 'this list',
    async run () {
      const width = Math.max(...Object.values(COMMANDS).map(c => c.usage.length))
      return ok(Object.values(COMMANDS).map(c => `  ${c.usage.padEnd(width)}  ${c.help}`).join('\n'))
    }
  },
  exit: {
    usage: 'exit',
    help: 'stop the replica and quit (also quit, Ctrl-D)',
    async run () {
      return { ok: true, text: 'bye', exit: true }
    }
  }
}

/** Runs one command line; errors become failed results, never exceptions */
export async function runCommand (ctx: CommandContext, line: string): Promise<CommandResult | undefined> {
  const words = tokenize(line.trim())
  if (words.length === 0 || words[0].startsWith('#')) return undefined
  const name = words[0].toLowerCase() === 'quit' ? 'exit' : words[0].toLowerCase()
  const command = COMMANDS[name]
  if (command == null) return fail(`unknown command "${words[0]}": try help`)
  try {
    return await command.run(ctx, words.slice(1))
  } catch (err: any) {
    return fail(`${err.name ?? 'Error'}: ${err.message}`)
  }
}
