#!/usr/bin/env node
/**
 * `npm run demo`: three replica processes on 127.0.0.1, each with its own
 * LevelDB data directory. Each writes its own keys, one key is deleted, and
 * the demo shows every replica's view converging. Exits 0 when all three
 * agree, 1 when they do not within the deadline. Processes and temp dirs are
 * removed either way.
 */

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ReplicaProcess } from '../../src/cli/process.js'

const DEADLINE_MS = 60_000
const NAMES = ['A', 'B', 'C']

function ms (start: number): string {
  return `${Math.round(performance.now() - start)} ms`
}

function view (entries: Array<[string, string]>): string {
  return entries.length === 0 ? '(empty)' : entries.map(([k, v]) => `${k}=${v}`).join('  ')
}

async function main (): Promise<number> {
  const root = await mkdtemp(join(tmpdir(), 'datastore-crdt-demo-'))
  const topic = `datastore-crdt-demo-${Math.random().toString(36).slice(2, 8)}`
  const replicas: ReplicaProcess[] = []
  const t0 = performance.now()
  try {
    console.log(`datastore-crdt demo: 3 replicas on 127.0.0.1, topic ${topic}`)
    for (const name of NAMES) {
      const replica = await ReplicaProcess.start({ data: join(root, name), topic, rebroadcast: 500 })
      replicas.push(replica)
      console.log(`  replica ${name}  ${replica.addrs[0]}`)
    }
    const [a, b, c] = replicas

    let start = performance.now()
    await b.must(`connect ${a.addrs[0]}`)
    await c.must(`connect ${b.addrs[0]}`)
    await c.must(`connect ${a.addrs[0]}`)
    console.log(`connected A-B, B-C, A-C (${ms(start)})`)

    const writes: Array<[ReplicaProcess, string, string, string]> = [
      [a, 'A', '/fruits/apple', 'red'],
      [b, 'B', '/fruits/banana', 'yellow'],
      [c, 'C', '/fruits/cherry', 'dark-red'],
      [c, 'C', '/veg/carrot', 'orange']
    ]
    for (const [replica, name, key, value] of writes) {
      const reply = await replica.must(`put ${key} ${value}`)
      console.log(`${name}: put ${key} = ${value} (${String(reply.ms)} ms)`)
    }

    // delete on A a key written on B, once A has seen it
    start = performance.now()
    await a.must('wait /fruits/banana yellow 30000')
    console.log(`A: sees /fruits/banana from B after ${ms(start)}`)
    await a.must('delete /fruits/banana')
    console.log('A: delete /fruits/banana')

    console.log('waiting for the three replicas to agree...')
    start = performance.now()
    let last = ''
    for (let round = 0; performance.now() - start < DEADLINE_MS && round < 10_000; round++) {
      const views = await Promise.all(replicas.map(async r => (await r.must('list')).entries as Array<[string, string]>))
      const agree = views.every(v => JSON.stringify(v) === JSON.stringify(views[0]))
      const line = views.map((v, i) => `${NAMES[i]}: ${v.length} keys`).join('  ') + (agree ? '  (all agree)' : '')
      if (line !== last) {
        console.log(`  +${ms(start)}  ${line}`)
        last = line
      }
      // equal values can come a moment before equal heads: a replica still
      // walking below a head it received already shows that head's writes
      const heads = agree && views[0].length === 3
        ? await Promise.all(replicas.map(async r => (await r.must('heads')).heads.map((h: any) => h.cid).sort().join(',')))
        : []
      if (heads.length > 0 && heads.every(h => h === heads[0])) {
        for (const [i, v] of views.entries()) console.log(`  ${NAMES[i]}: ${view(v)}`)
        console.log(`same heads on all three: yes (${heads[0]})`)
        console.log(`all three replicas agree after ${ms(start)} (demo total ${ms(t0)})`)
        return 0
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    console.error(`FAILED: the replicas did not agree on values and heads within ${DEADLINE_MS / 1000} s`)
    return 1
  } catch (err: any) {
    console.error(`FAILED: ${err.message}`)
    return 1
  } finally {
    await Promise.all(replicas.map(async r => r.quit()))
    await rm(root, { recursive: true, force: true })
  }
}

main().then(code => { process.exitCode = code }, err => {
  console.error(err)
  process.exitCode = 1
})
