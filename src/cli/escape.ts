/**
 * Makes text from other replicas safe to print on a terminal: control
 * characters (C0, DEL, C1 — ESC and BEL among them, which can rewrite the
 * screen or the title) and bidirectional overrides (which can reorder what
 * is shown) become visible escapes such as `\x1b` or `\u202e`. Newlines and
 * tabs are escaped too, so one key or value is always one line.
 * JSON output needs none of this: JSON.stringify escapes control
 * characters already.
 */

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

/** `text` with every control character escaped */
export function escapeControl (text: string): string {
  return text.replace(UNSAFE, ch => {
    const named = NAMED[ch]
    if (named != null) return named
    const code = ch.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`
  })
}
