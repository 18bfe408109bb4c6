/**
 * js-ds-crdt 0.0.33 ships ESM whose relative imports have no file extension
 * (`import … from './crdt'`), which Node's ESM loader refuses. This resolve
 * hook retries such specifiers with `.js` and `/index.js`. It touches
 * nothing else: the package's own compiled code runs unchanged.
 */

import { register } from 'node:module'

export async function resolve (specifier, context, next) {
  try {
    return await next(specifier, context)
  } catch (err) {
    const relative = specifier.startsWith('./') || specifier.startsWith('../')
    if ((err?.code !== 'ERR_MODULE_NOT_FOUND' && err?.code !== 'ERR_UNSUPPORTED_DIR_IMPORT') || !relative || !String(context.parentURL).includes('/js-ds-crdt/')) throw err
    for (const suffix of ['.js', '/index.js']) {
      try {
        return await next(specifier + suffix, context)
      } catch {}
    }
    throw err
  }
}

/** Registers this file as a module resolve hook (call before importing js-ds-crdt) */
export function install () {
  register(import.meta.url)
}
