/**
 * Text Postgres cannot store. A text or JSON column refuses the NUL character (`\u0000`), and a
 * lone UTF-16 surrogate (`\ud800` with no partner) has no UTF-8 form at all, so either one in a
 * prompt, a name or an address would fail deep inside a write. Every string the service accepts is
 * checked at its edge with these, and refused with the field's name.
 */

/** Why `s` cannot be stored, or null when it can. */
export function unstorableReason(s: string): string | null {
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000), which cannot be stored';
  if (!s.isWellFormed()) return 'contains a lone UTF-16 surrogate, which is not valid Unicode text';
  return null;
}

export interface UnstorableText {
  /** Where the string is, e.g. `input.prompt` or `tags[2]`. */
  path: string;
  reason: string;
}

/**
 * The first string inside `value` (a JSON-like value: strings, arrays, plain objects; keys count
 * too) that cannot be stored, with its path below `root`; null when there is none. Past `maxNodes`
 * values it stops and refuses the rest unread (a request's size is capped before it gets here).
 */
export function findUnstorableText(value: unknown, root: string, maxNodes = 100_000): UnstorableText | null {
  const stack: Array<[unknown, string]> = [[value, root]];
  for (let seen = 0; stack.length > 0; seen++) {
    if (seen >= maxNodes) return { path: root, reason: `holds more than ${maxNodes} values, more than this service reads` };
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      const reason = unstorableReason(v);
      if (reason) return { path, reason };
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${path}[${i}]`]);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, child] of Object.entries(v).reverse()) {
        const reason = unstorableReason(k);
        if (reason) return { path: `${path} (a key)`, reason };
        stack.push([child, path ? `${path}.${k}` : k]);
      }
    }
  }
  return null;
}
