/**
 * `npm run chaos [-- --quick] [-- --compaction] [-- --seed N] [-- --replicas N] [-- --duration ms] [-- --converge-timeout ms] [-- --keep]`
 *
 * Runs the chaos harness (see harness.ts) and exits non-zero on any
 * violation, printing the seed that replays the run's choices.
 */

import { CHAOS_COMPACTION, compactionOptions, formatSummary, fullOptions, quickOptions, runChaos, saveReport } from './harness.js'

function argValue (name: string): string | undefined {
  const at = process.argv.indexOf(name)
  return at >= 0 ? process.argv[at + 1] : undefined
}

const quick = process.argv.includes('--quick')
const seed = Number(argValue('--seed') ?? Math.floor(Math.random() * 2 ** 31))
if (!Number.isInteger(seed) || seed < 0) {
  process.stderr.write('--seed takes a non-negative integer\n')
  process.exit(2)
}
// --compaction: with --quick the short compaction run, else the full run with compaction on
const compaction = process.argv.includes('--compaction')
let options = quick ? quickOptions(seed) : fullOptions(seed)
if (compaction) options = quick ? compactionOptions(seed) : { ...options, compaction: CHAOS_COMPACTION }
const replicas = argValue('--replicas')
if (replicas != null) options.replicas = Number(replicas)
const duration = argValue('--duration')
if (duration != null) options.duration = Number(duration)
const converge = argValue('--converge-timeout')
if (converge != null) options.convergeTimeout = Number(converge)
options.keep = process.argv.includes('--keep')

const report = await runChaos(options)
process.stdout.write(formatSummary(report.summary) + '\n')
if (report.ok) {
  process.stdout.write('no violations\n')
  process.exit(0)
}
const path = await saveReport(report)
process.stdout.write(`${report.violations.length} violation(s); report in ${path}\n`)
process.stdout.write(`replay with: npm run chaos -- ${quick ? '--quick ' : ''}${options.compaction != null ? '--compaction ' : ''}--seed ${seed}\n`)
process.exit(1)
