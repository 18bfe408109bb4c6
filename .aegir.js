/**
 * aegir settings for `npm run dep-check` and `npm run doc-check`.
 * Lint runs eslint directly with eslint.config.js (aegir's rules plus the
 * README's documented exceptions).
 */
export default {
  dependencyCheck: {
    // stryker loads these plugins by name from stryker.config.mjs
    ignore: ['@stryker-mutator/mocha-runner', '@stryker-mutator/typescript-checker'],
    // the examples run from a clone with the dev dependencies installed, like the tests
    productionIgnorePatterns: ['/benchmark', '/benchmarks', '/dist', '/test', '/examples', '.aegir.js', 'eslint.config.js', 'stryker.config.mjs']
  },
  documentCheck: {
    inputFiles: ['README.md']
  }
}
