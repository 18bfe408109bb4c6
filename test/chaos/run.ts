/**
 * `npm run chaos [-- --quick] [-- --trusted] [-- --compaction [--membership-window ms]] [-- --seed N] [-- --replicas N] [-- --duration ms] [-- --converge-timeout ms] [-- --keep]`
 *
 * Runs the chaos harness (see harness.ts) and exits non-zero on any
 * violation, printing the seed that replays the run's choices.
 */

import { CHAOS_COMPACTION, compactionOptions, formatSummary, fullOptions, quickOptions, runChaos, saveReport, trustedQuickOptions } from './harness.js'

function argValue (name: string): string | undefined {
  const at = process.argv.indexOf(name)
  return at >= 0 ? process.argv[at + 1] : undefined
}

const quick = process.argv.includes('--quick')
const trusted = process.argv.includes('--trusted')
const seed = Number(argValue('--seed') ?? Math.floor(Math.random() * 2 ** 31))
if (!Number.isInteger(seed) || seed < 0) {
  process.stderr.write('--seed takes a non-negative integer\n')
  process.exit(2)
}
// --trusted: the writers are the replicas' keys, plus a rogue replica (issue #17); with --quick, the short run of npm test
// --compaction: with --quick the short compaction run, else the full run with compaction on
const compaction = process.argv.includes('--compaction')
let preset = fullOptions
if (quick) preset = trusted ? trustedQuickOptions : quickOptions
let options = preset(seed)
if (compaction) options = quick ? compactionOptions(seed) : { ...options, compaction: CHAOS_COMPACTION }
// --membership-window ms: replicas killed for longer stop being known replicas, and the others compact
// without them (the path back of a replica away past the window: it must catch up from a snapshot)
const window = argValue('--membership-window')
if (window != null && options.compaction != null) options.compaction = { ...options.compaction, membershipWindow: Number(window) }
const replicas = argValue('--replicas')
if (replicas != null) options.replicas = Number(replicas)
const duration = argValue('--duration')
if (duration != null) options.duration = Number(duration)
const converge = argValue('--converge-timeout')
if (converge != null) options.convergeTimeout = Number(converge)
options.keep = process.argv.includes('--keep')
if (trusted) options.trusted = true

const report = await runChaos(options)
process.stdout.write(formatSummary(report.summary) + '\n')
if (report.ok) {
  process.stdout.write('no violations\n')
  process.exit(0)
}
const path = await saveReport(report)
process.stdout.write(`${report.violations.length} violation(s); report in ${path}\n`)
process.stdout.write(`replay with: npm run chaos -- ${quick ? '--quick ' : ''}${trusted ? '--trusted ' : ''}${options.compaction != null ? '--compaction ' : ''}${window != null ? `--membership-window ${window} ` : ''}--seed ${seed}\n`)
process.exit(1)
