/**
 * Imported first by the package entry: throws at import on a Node.js too
 * old to run it, with a message naming the version needed.
 */

import { nodeVersionProblem } from './node-version.js'

const problem = nodeVersionProblem()
if (problem != null) {
  throw Object.assign(new Error(problem), { name: 'UnsupportedNodeError' })
}
