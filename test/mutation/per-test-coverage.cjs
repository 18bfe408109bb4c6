/**
 * Root hooks for Stryker's dry run (see stryker.config.mjs), so that
 * `perTest` coverage does not give false survivors.
 *
 * Stryker's mocha runner records which tests reach each mutant by setting
 * the current test in a root `beforeEach` and never clearing it. Code run
 * between two tests (a suite's `before()` or `after()` hook, work a test
 * left running) was therefore recorded against the test that had just
 * finished, and the mutant was later run against that test alone, without
 * the `before()` hook whose setup reaches it: a survivor no spec would let
 * live (seen in or-set.ts: killed by unit-or-set when planted by hand).
 *
 * After each test this names the next test to run as the current one, so
 * the `before()` hooks of its suites, which run again when that test runs
 * alone, are recorded against it. (Clearing the current test instead makes
 * such code "static" coverage: exact, but Stryker then runs the mutant
 * against every spec in a fresh process, which made most engine mutants
 * cost a minute on the shared machine.) Outside a Stryker run
 * `__stryker__` is absent and this does nothing.
 */

/**
 * Tests in the order mocha runs them: a suite's own tests, then its child suites
 *
 * @param {import('mocha').Suite} root - the root suite
 * @returns {import('mocha').Test[]} the tests that will run
 */
function runOrder (root) {
  const order = []
  const visit = suite => {
    for (const test of suite.tests) if (!test.isPending()) order.push(test)
    for (const child of suite.suites) visit(child)
  }
  visit(root)
  return order
}

let order

exports.mochaHooks = {
  afterEach () {
    const stryker = globalThis.__stryker__
    if (stryker == null || this.currentTest == null) return
    let root = this.currentTest.parent
    while (root.parent != null) root = root.parent
    order ??= runOrder(root)
    stryker.currentTestId = order[order.indexOf(this.currentTest) + 1]?.fullTitle()
  }
}
