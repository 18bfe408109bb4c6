/**
 * Small helpers shared by the engine's files.
 */

import { AbortError } from 'abort-error'
import type { AbortOptions } from 'interface-store'

/** Resolves after `ms`, or rejects with an AbortError when the signal fires */
export async function delay (ms: number, options?: AbortOptions): Promise<void> {
  options?.signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(new AbortError())
    }
    const timer = setTimeout(() => {
      options?.signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    options?.signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** A signal that fires when the given one does or after `ms` (0 = never) */
export function withTimeout (signal: AbortSignal | undefined, ms: number): AbortSignal | undefined {
  if (ms <= 0) return signal
  const timeout = AbortSignal.timeout(ms)
  return signal == null ? timeout : AbortSignal.any([signal, timeout])
}

/** `d` ± 30%, as go-ds-crdt spreads its rebroadcasts */
export function jitter (d: number): number {
  const leeway = d * 0.3
  return Math.max(1, Math.round(d - leeway + Math.random() * leeway * 2))
}
