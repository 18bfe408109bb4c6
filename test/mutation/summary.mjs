/**
 * Prints the mutation score of each mutated file, and each surviving
 * mutant, from the JSON reports of the per-module runs
 * (reports/mutation/<module>/mutation.json, see modules.sh) or of one run
 * over every module (reports/mutation/mutation.json) when there are none.
 * Score = (killed + timed out) / (killed + timed out + survived + no
 * coverage), as Stryker counts it; mutants that do not compile are shown
 * but not counted. The last column gives, per module, the commit it ran on,
 * the date and the run time, from the run.json modules.sh writes beside
 * each report (with `lines` when a run was narrowed with --mutate).
 */

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const ROOT = 'reports/mutation'
const reports = readdirSync(ROOT, { withFileTypes: true })
  .filter(entry => entry.isDirectory() && existsSync(join(ROOT, entry.name, 'mutation.json')))
  .map(entry => join(ROOT, entry.name, 'mutation.json'))
if (reports.length === 0 && existsSync(join(ROOT, 'mutation.json'))) reports.push(join(ROOT, 'mutation.json'))

const rows = []
const survivors = []
const total = { killed: 0, survived: 0, noCoverage: 0, compileError: 0 }
for (const report of reports) {
  const { files } = JSON.parse(readFileSync(report, 'utf8'))
  const runFile = join(report, '..', 'run.json')
  const run = existsSync(runFile) ? JSON.parse(readFileSync(runFile, 'utf8')) : undefined
  const ran = run == null ? '' : `commit ${run.commit}, ${run.date}, ${run.minutes} min${run.lines == null ? '' : `, lines ${run.lines} only`}`
  for (const [file, { mutants, source }] of Object.entries(files)) {
    const lines = source.split('\n')
    const n = { killed: 0, survived: 0, noCoverage: 0, compileError: 0 }
    for (const mutant of mutants) {
      if (mutant.status === 'Killed' || mutant.status === 'Timeout') n.killed++
      else if (mutant.status === 'Survived') n.survived++
      else if (mutant.status === 'NoCoverage') n.noCoverage++
      else if (mutant.status === 'CompileError') n.compileError++
      if (mutant.status === 'Survived' || mutant.status === 'NoCoverage') {
        const { start, end } = mutant.location
        // the mutated span (not the whole line: a mutant of `a || b` may replace `a` only)
        const span = start.line === end.line
          ? lines[start.line - 1].slice(start.column - 1, end.column - 1)
          : lines[start.line - 1].slice(start.column - 1) + ' …'
        survivors.push(`${file}:${start.line}:${start.column} ${mutant.mutatorName}${mutant.status === 'NoCoverage' ? ' (no coverage)' : ''}: \`${span.trim().replace(/\s+/g, ' ').slice(0, 90)}\` -> \`${String(mutant.replacement ?? '').replace(/\s+/g, ' ').slice(0, 60)}\``)
      }
    }
    for (const key of Object.keys(total)) total[key] += n[key]
    rows.push([file, n, ran])
  }
}

const score = n => (100 * n.killed / (n.killed + n.survived + n.noCoverage)).toFixed(1) + '%'
console.log('| file | killed (or timed out) | survived | no coverage | did not compile | score | run |')
console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |')
for (const [file, n, ran] of rows) console.log(`| \`${file}\` | ${n.killed} | ${n.survived} | ${n.noCoverage} | ${n.compileError} | ${score(n)} | ${ran} |`)
console.log(`| **core** | **${total.killed}** | **${total.survived}** | **${total.noCoverage}** | ${total.compileError} | **${score(total)}** | |`)
console.log('\nSurvivors:')
for (const s of survivors) console.log(`- ${s}`)
