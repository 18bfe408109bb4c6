/**
 * The replica's command language, shared by the interactive shell and the
 * script mode: one command per line, words split on spaces, "double" or
 * 'single' quotes keep spaces. Each command returns a result that can be
 * shown as text or as one JSON line. Keys, values and DAG names may come
 * from other replicas: text results escape their control characters.
 */

import { multiaddr } from '@multiformats/multiaddr'
import { Key } from 'interface-datastore'
import { escapeControl as esc } from './escape.js'
import type { HeliaCRDTDatastore } from '../helia/index.js'
import type { CRDTBatch } from '../index.js'
import type { ReplicaNode } from '../node/index.js'

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
  /** Failed because the command was misused (exit code 2 in one-shot mode) */
  usage?: boolean
  /** A write was made (a put, delete or commit outside a batch) */
  wrote?: boolean
}

export interface CommandSpec {
  usage: string
  help: string
  /** Most arguments accepted (more is a usage error) */
  maxArgs: number
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
    maxArgs: Infinity,
    async run (ctx, [key, ...rest]) {
      if (key == null || rest.length === 0) return { ...fail('usage: put <key> <value>'), usage: true }
      const value = rest.join(' ')
      if (ctx.batch != null) {
        ctx.batch.put(toKey(key), enc.encode(value))
        ctx.batchOps++
        return ok(`batched put ${toKey(key).toString()} (${ctx.batchOps} ops)`, { batched: true })
      }
      const start = performance.now()
      await ctx.store.put(toKey(key), enc.encode(value))
      const ms = Math.round(performance.now() - start)
      return { ...ok(`ok (${ms} ms)`, { key: toKey(key).toString(), ms }), wrote: true }
    }
  },
  get: {
    usage: 'get <key>',
    help: 'print the value of a key',
    maxArgs: 1,
    async run (ctx, [key]) {
      if (key == null) return { ...fail('usage: get <key>'), usage: true }
      if (!(await ctx.store.has(toKey(key)))) return { ok: true, text: '(not found)', data: { found: false } }
      const value = dec.decode(await ctx.store.get(toKey(key)))
      return ok(esc(value), { found: true, value })
    }
  },
  delete: {
    usage: 'delete <key>',
    help: 'remove a key (inside a batch: add to the batch)',
    maxArgs: 1,
    async run (ctx, [key]) {
      if (key == null) return { ...fail('usage: delete <key>'), usage: true }
      if (ctx.batch != null) {
        ctx.batch.delete(toKey(key))
        ctx.batchOps++
        return ok(`batched delete ${toKey(key).toString()} (${ctx.batchOps} ops)`, { batched: true })
      }
      await ctx.store.delete(toKey(key))
      return { ...ok('ok', { key: toKey(key).toString() }), wrote: true }
    }
  },
  list: {
    usage: 'list [prefix | path/]',
    help: 'list keys and values: all, those starting with prefix (/a/1 also gives /a/10), or with a trailing / the key path and those below it (/a/1/ gives /a/1 and /a/1/x, not /a/10)',
    maxArgs: 1,
    async run (ctx, [prefix]) {
      const entries: Array<[string, string]> = []
      const path = prefix != null && prefix.length > 1 && prefix.endsWith('/') ? toKey(prefix).toString() : undefined
      const query = path ?? (prefix == null ? undefined : toKey(prefix).toString())
      for await (const { key, value } of ctx.store.query({ prefix: query })) {
        const k = key.toString()
        if (path != null && k !== path && !k.startsWith(`${path}/`)) continue
        entries.push([k, dec.decode(value)])
      }
      entries.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
      const text = entries.length === 0 ? '(empty)' : entries.map(([k, v]) => `${esc(k)} = ${esc(v)}`).join('\n')
      return ok(text, { entries })
    }
  },
  batch: {
    usage: 'batch',
    help: 'start a batch: following puts and deletes become one DAG node on commit',
    maxArgs: 0,
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
    maxArgs: 0,
    async run (ctx) {
      if (ctx.batch == null) return fail('no batch is open')
      const batch = ctx.batch
      const ops = ctx.batchOps
      ctx.batch = undefined
      ctx.batchOps = 0
      const start = performance.now()
      await batch.commit()
      const ms = Math.round(performance.now() - start)
      return { ...ok(`committed ${ops} ops (${ms} ms)`, { ops, ms }), wrote: ops > 0 }
    }
  },
  discard: {
    usage: 'discard',
    help: 'drop the open batch',
    maxArgs: 0,
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
    maxArgs: 0,
    async run (ctx) {
      const heads = ctx.store.heads().map(h => ({ cid: h.cid.toString(), height: h.height, dagName: h.dagName }))
      const text = heads.length === 0 ? '(no heads)' : heads.map(h => `${h.cid} height ${h.height}${h.dagName === '' ? '' : ` [${esc(h.dagName)}]`}`).join('\n')
      return ok(text, { heads })
    }
  },
  stats: {
    usage: 'stats',
    help: 'heads, height, queued jobs, dirty flag',
    maxArgs: 0,
    async run (ctx) {
      const s = ctx.store.stats()
      const dirty = await ctx.store.isDirty()
      const pending = (await ctx.store.pendingBranches()).length
      const data = { heads: s.heads.length, maxHeight: s.maxHeight, queuedJobs: s.queuedJobs, fetchedBlocks: s.fetchedBlocks, receivedBroadcasts: s.receivedBroadcasts, pendingBranches: pending, dirty }
      return ok(Object.entries(data).map(([k, v]) => `${k}: ${String(v)}`).join('\n'), data)
    }
  },
  peers: {
    usage: 'peers',
    help: 'list connected peers',
    maxArgs: 0,
    async run (ctx) {
      const peers = ctx.node.libp2p.getConnections().map(c => `${c.remoteAddr.toString()}${c.remoteAddr.toString().includes('/p2p/') ? '' : `/p2p/${c.remotePeer.toString()}`}`)
      return ok(peers.length === 0 ? '(no peers)' : peers.join('\n'), { peers })
    }
  },
  connect: {
    usage: 'connect <multiaddr>',
    help: 'dial another replica',
    maxArgs: 1,
    async run (ctx, [addr]) {
      if (addr == null) return { ...fail('usage: connect <multiaddr>'), usage: true }
      const ma = multiaddr(addr)
      const peer = /\/p2p\/([^/]+)$/.exec(ma.toString())?.[1]
      const existing = ctx.node.libp2p.getConnections().filter(c => c.remotePeer.toString() === peer)
      const start = performance.now()
      // libp2p hands back an open connection to the same peer whatever the address; force a
      // dial when there is one, so a wrong address fails instead of reporting "connected"
      const conn = await ctx.node.libp2p.dial(ma, { signal: AbortSignal.timeout(10_000), force: existing.length > 0 })
      const ms = Math.round(performance.now() - start)
      const also = existing.length > 0 ? `; already connected via ${existing.map(c => c.remoteAddr.toString()).join(', ')}` : ''
      return ok(`connected to ${conn.remotePeer.toString()} at ${conn.remoteAddr.toString()} (${ms} ms${also})`, { peer: conn.remotePeer.toString(), addr: conn.remoteAddr.toString(), ms })
    }
  },
  addrs: {
    usage: 'addrs',
    help: 'this replica\'s listen addresses',
    maxArgs: 0,
    async run (ctx) {
      const addrs = ctx.node.libp2p.getMultiaddrs().map(String)
      return ok(addrs.join('\n'), { peerId: ctx.node.libp2p.peerId.toString(), addrs })
    }
  },
  dag: {
    usage: 'dag',
    help: 'print the DAG (small DAGs only)',
    maxArgs: 0,
    async run (ctx) {
      const text = await ctx.store.printDAG({ limit: 200 })
      return ok(text === '' ? '(empty DAG)' : text.split('\n').map(esc).join('\n'), { dag: text })
    }
  },
  wait: {
    usage: 'wait <key> [value] [timeout-ms]',
    help: 'wait until a key exists (with that value), for scripts',
    maxArgs: 3,
    async run (ctx, [key, value, timeout]) {
      if (key == null) return { ...fail('usage: wait <key> [value] [timeout-ms]'), usage: true }
      const deadline = Date.now() + Number(timeout ?? 30_000)
      for (let i = 0; i < 1_000_000; i++) {
        if (await ctx.store.has(toKey(key))) {
          const current = dec.decode(await ctx.store.get(toKey(key)))
          if (value == null || value === current) return ok(esc(current), { value: current })
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
    maxArgs: 0,
    async run () {
      const width = Math.max(...Object.values(COMMANDS).map(c => c.usage.length))
      return ok(Object.values(COMMANDS).map(c => `  ${c.usage.padEnd(width)}  ${c.help}`).join('\n'))
    }
  },
  exit: {
    usage: 'exit',
    help: 'stop the replica and quit (also quit, Ctrl-D)',
    maxArgs: 0,
    async run () {
      return { ok: true, text: 'bye', exit: true }
    }
  }
}

/** Runs one command line; errors become failed results, never exceptions */
export async function runCommand (ctx: CommandContext, line: string): Promise<CommandResult | undefined> {
  const words = tokenize(line.trim())
  if (words.length === 0 || words[0].startsWith('#')) return undefined
  return runWords(ctx, words)
}

/** Runs a command already split into words (the one-shot command line) */
export async function runWords (ctx: CommandContext, words: string[]): Promise<CommandResult | undefined> {
  if (words.length === 0) return undefined
  const name = words[0].toLowerCase() === 'quit' ? 'exit' : words[0].toLowerCase()
  const command = COMMANDS[name]
  if (command == null) return fail(`unknown command "${esc(words[0])}": try help`)
  const args = words.slice(1)
  if (args.length > command.maxArgs) {
    return { ...fail(`${name} takes ${command.maxArgs === 0 ? 'no arguments' : `at most ${command.maxArgs}`}, got ${args.length} (quote values with spaces): usage: ${command.usage}`), usage: true }
  }
  try {
    return await command.run(ctx, args)
  } catch (err: any) {
    return fail(`${err.name ?? 'Error'}: ${esc(String(err.message))}`)
  }
}
