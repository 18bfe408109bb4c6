/**
 * Mutation testing (StrykerJS) of the core modules: the OR-set, the engine,
 * the heads, the DAG walker, the codecs and the write set. Run it with
 * `npm run test:mutation`; it is not part of `npm test`.
 *
 * - Stryker copies the tree into .stryker-tmp/, plants one mutant at a
 *   time in src/, rebuilds with tsc and runs only the fast in-process specs
 *   below (memory stores, no network, no child processes), each mutant
 *   against the tests that cover it.
 * - The TypeScript checker drops mutants that do not compile before any
 *   test runs.
 * - `perTest` coverage: a dry run records which tests reach each mutant,
 *   and each mutant runs against those tests only, in one long-lived
 *   process. Stryker's mocha runner never clears the current test, so code
 *   run by `before()` hooks was recorded against the test that ran before
 *   and gave false survivors; test/mutation/per-test-coverage.cjs records
 *   it against the next test instead, whose run replays those hooks.
 *   `'all'` (or clearing the current test, which makes such code static)
 *   is exact but runs each mutant against every spec in a fresh process:
 *   10 s a mutant idle, a minute on the shared machine.
 * - MUTATION_MODULE=walker (or or-set, heads, write-set, codecs, engine)
 *   mutates one module, with its own incremental file and reports under
 *   reports/mutation/<module>/; unset, every core module in one run.
 * - Incremental mode keeps results in reports/mutation/[<module>/]incremental.json
 *   (git ignored): a later run re-tests only mutants whose code or the specs
 *   changed. Stryker writes that file when a run ends, so an interrupted run
 *   cannot be resumed; per-module runs are the unit of resumption.
 *   `npm run test:mutation -- --force` re-tests everything.
 * - Concurrency 1: the machine has two cores shared with other jobs; on an
 *   idle machine `npm run test:mutation -- --concurrency 2`.
 * - PROPERTY_RUNS=10 (see package.json) keeps the property spec to a
 *   few seconds per mutant; the full-strength run is `npm run test:property`.
 */

import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

// the mocha runner was written for mocha <= 11: see the file for why
const MOCHA_12_COMPAT = fileURLToPath(new URL('./test/mutation/mocha-12-compat.cjs', import.meta.url))
createRequire(import.meta.url)(MOCHA_12_COMPAT)

// MUTATION_SPECS=write-set,core narrows a run to those specs (while writing
// tests for one module); scores for the README come from the full list
const SPECS = process.env.MUTATION_SPECS?.split(',').map(name => `dist/test/${name}.spec.js`)

/** The core modules, by the name MUTATION_MODULE takes */
const MODULES = {
  'or-set': ['src/crdt/or-set.ts'],
  engine: ['src/engine/engine.ts'],
  heads: ['src/crdt/heads.ts'],
  walker: ['src/engine/walker.ts'],
  'write-set': ['src/crdt/write-set.ts'],
  codecs: [
    'src/codec/delta.ts', 'src/codec/dag-node.ts', 'src/codec/broadcast.ts', 'src/codec/block-key.ts',
    // the hash check of blocks that arrive outside a fetch, and what a broadcast carries besides its heads
    'src/codec/verify-block.ts', 'src/codec/broadcast-blocks.ts', 'src/codec/broadcast-snapshot.ts'
  ]
}

const MODULE = process.env.MUTATION_MODULE
if (MODULE != null && MODULES[MODULE] == null) {
  throw new Error(`MUTATION_MODULE must be one of ${Object.keys(MODULES).join(', ')}`)
}
// MUTATION_REPORTS: another directory for a run narrowed with --mutate (modules.sh
// gives each line range its own, so it neither reads nor clobbers the module's incremental file)
const REPORTS = process.env.MUTATION_REPORTS ?? (MODULE == null ? 'reports/mutation' : `reports/mutation/${MODULE}`)

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
const config = {
  packageManager: 'npm',
  mutate: MODULE == null ? Object.values(MODULES).flat() : MODULES[MODULE],
  buildCommand: 'tsc -p .',
  testRunner: 'mocha',
  testRunnerNodeArgs: ['--require', MOCHA_12_COMPAT],
  mochaOptions: {
    config: '.mocharc.json',
    require: [fileURLToPath(new URL('./test/mutation/per-test-coverage.cjs', import.meta.url))],
    spec: SPECS ?? [
      // the unit specs first: mocha bails at the first failure, so a mutant
      // they kill costs milliseconds instead of the slower specs' seconds
      'dist/test/write-set.spec.js',
      'dist/test/unit-heads.spec.js',
      'dist/test/unit-or-set.spec.js',
      'dist/test/unit-engine.spec.js',
      'dist/test/walker.spec.js',
      'dist/test/codecs-carried.spec.js',
      'dist/test/codecs-edges.spec.js',
      'dist/test/core.spec.js',
      'dist/test/or-set.spec.js',
      'dist/test/batch.spec.js',
      'dist/test/wire.spec.js',
      'dist/test/errors.spec.js',
      'dist/test/codecs.spec.js',
      'dist/test/restart.spec.js',
      'dist/test/walks.spec.js',
      'dist/test/merge-events.spec.js',
      'dist/test/merge-reads.spec.js',
      'dist/test/property.spec.js'
    ]
  },
  checkers: ['typescript'],
  // the checker type-checks src/ only (tsconfig.stryker.json): a mutant of
  // src/ breaking a test's types is not worth the time of checking test/
  tsconfigFile: 'tsconfig.stryker.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  // with test/mutation/per-test-coverage.cjs: see the header
  coverageAnalysis: 'perTest',
  concurrency: 1,
  timeoutMS: 20000,
  timeoutFactor: 2,
  incremental: true,
  incrementalFile: `${REPORTS}/incremental.json`,
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: { fileName: `${REPORTS}/mutation.html` },
  jsonReporter: { fileName: `${REPORTS}/mutation.json` },
  thresholds: { high: 90, low: 85, break: null }
}

export default config
