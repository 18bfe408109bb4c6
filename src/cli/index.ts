#!/usr/bin/env node
/**
 * `datastore-crdt`: the command-line replica's entry. It checks the Node.js
 * version before loading anything else (libp2p fails obscurely on old
 * versions), then runs `main.ts`.
 */

import { nodeVersionProblem } from '../node-version.js'

const problem = nodeVersionProblem()
if (problem != null) {
  process.stderr.write(`${problem}\n`)
  process.exit(1)
}
await import('./main.js')
