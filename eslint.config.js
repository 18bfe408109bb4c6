/**
 * Lint configuration: aegir's (the js-libp2p / Helia / js-stores rule set,
 * neostandard + typescript-eslint with type information + jsdoc), with the
 * few rules this project turns off listed below. Each one turned off has its
 * reason in the README ("Lint rules turned off and why"); the bug-catching
 * rules (floating and misused promises, await-thenable, return-await,
 * only-throw-error, no-console in library code, ...) stay on.
 */

import aegir from 'aegir/eslint.config.js'

export default [
  {
    ignores: ['dist/**', 'coverage/**', 'reports/**', '.stryker-tmp/**', 'benchmarks/**', '**/node_modules/**']
  },
  ...aegir,
  {
    // sources import each other with the .js extension TypeScript's node16 resolution emits as is;
    // aegir's map also allows .ts (for rewriteRelativeImportExtensions), which this package does not use
    files: ['**/*.ts'],
    settings: { n: { typescriptExtensionMap: [['.ts', '.js']], tryExtensions: ['.ts', '.js', '.json', '.node', '.mjs', '.cjs'] } }
  },
  {
    // one-line guards (`if (done) return`) are the house style; braces stay required around bodies that span lines
    rules: { curly: ['error', 'multi-line'] }
  },
  {
    // markdown lists in doc comments indent their continuation lines; the rule checks layout only
    rules: { 'jsdoc/check-indentation': 'off' }
  },
  {
    // tests poll flags that event listeners and timers set, define tests in loops over suite state,
    // and nest describe/it/waitFor callbacks: these rules flag those patterns without finding bugs there
    files: ['test/**'],
    rules: { 'no-unmodified-loop-condition': 'off', 'no-loop-func': 'off', 'max-nested-callbacks': 'off', 'max-depth': 'off' }
  },
  {
    // programs whose output is the console: the CLI, the examples, the test fixtures' child processes
    files: ['src/cli/**', 'examples/**', 'test/**'],
    rules: { 'no-console': 'off' }
  }
]
