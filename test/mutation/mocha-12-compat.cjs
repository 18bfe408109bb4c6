/**
 * Preloaded into Stryker's processes (see stryker.config.mjs).
 *
 * @stryker-mutator/mocha-runner 9 requires mocha's CLI helpers by path
 * without an extension (`mocha/lib/cli/run-helpers`, `.../options`,
 * `.../collect-files`); mocha 12 renamed those files to `.cjs`, which
 * Node's resolver does not try. Registering `.cjs` as a CommonJS extension
 * makes the extensionless paths resolve; the helpers' API is unchanged.
 * Remove this once the runner supports mocha 12.
 */

const Module = require('node:module')

if (Module._extensions['.cjs'] == null) {
  Module._extensions['.cjs'] = Module._extensions['.js']
}
