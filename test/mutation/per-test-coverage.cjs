/**
 * Root hooks for Stryker's dry run (see stryker.config.mjs), so that
 * `perTest` coverage does not give false survivors.
 *
 * Stryker's mocha runner records which tests reach each mutant by setting
 * the current test in a root `beforeEach` and never clearing it. Code run
 * by a suite's `before()` or `after()` hook, or between two tests, was
 * therefore recorded against whichever test ran last, and the mutant was
 * later run against that test alone, without the hooks whose setup reaches
 * it: a survivor no spec would let live (seen in or-set.ts, killed when
 * planted by hand). Clearing the current test after each test makes such
 * code "static" coverage instead, and Stryker runs a static mutant against
 * every spec. Outside a Stryker run `__stryker__` is absent and this does
 * nothing.
 */

exports.mochaHooks = {
  afterEach () {
    const stryker = globalThis.__stryker__
    if (stryker != null) stryker.currentTestId = undefined
  }
}
