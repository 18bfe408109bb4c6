/**
 * Entry of the browser suite: every spec that runs in the page. The runner
 * (test/browser.spec.ts) bundles this file with esbuild for browsers and
 * runs it in headless Chromium; nothing here may import a `node:` module.
 */

import './or-set.js'
import './batch.js'
import './wire.js'
import './interface-datastore.js'
