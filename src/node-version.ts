/**
 * The Node.js version check, kept apart so it runs before anything that
 * needs a recent Node: libp2p 3 and Helia 7 use `Promise.withResolvers`
 * and undici's zstd support (Node 22+), and on older versions fail deep
 * inside with errors that name neither Node nor the version needed.
 * Outside Node (browsers) there is nothing to check.
 */

/** The oldest Node.js major version the package runs on */
export const MIN_NODE_MAJOR = 22

/** Why this Node.js cannot run the package, or undefined when it can (or this is not Node) */
export function nodeVersionProblem (version: string | undefined = globalThis.process?.versions?.node): string | undefined {
  if (version == null) return undefined
  const major = Number(version.split('.')[0])
  if (!Number.isInteger(major) || major >= MIN_NODE_MAJOR) return undefined
  return `datastore-crdt needs Node.js ${MIN_NODE_MAJOR} or later; this is Node.js ${version}. Install a current Node.js (https://nodejs.org)`
}
