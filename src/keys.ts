/** Characters that would change a key's meaning: the separator, hash-tag braces, and our escape. */
const SPECIAL = /[%:{}]/
const SPECIAL_ALL = /[%:{}]/g
const ESCAPES: Record<string, string> = { '%': '%25', ':': '%3A', '{': '%7B', '}': '%7D' }

/**
 * Escapes one key segment so that user input can never add a separator or a hash tag:
 * `('a:b')` and `('a', 'b')` give different keys, and `{` cannot move a key to another slot.
 */
export function keyPart(part: string | number): string {
  const text = String(part)
  return SPECIAL.test(text) ? text.replace(SPECIAL_ALL, (c) => ESCAPES[c] ?? c) : text
}

/** SCAN `MATCH` pattern for every key that starts with `start` (its glob characters escaped). */
export function scanPattern(start: string): string {
  return `${start.replace(/[*?[\]\\]/g, '\\$&')}*`
}

/**
 * Builds the keys of one module: `prefix:module:part:part`. Keys that one Lua script or
 * multi-key command touches together use {@link ModuleKeys.tagged}, which puts a hash tag right
 * after the module so they land in the same Cluster slot.
 */
export class ModuleKeys {
  /** `prefix:module:` — every key of the module starts with it (useful for SCAN patterns). */
  readonly base: string

  constructor(prefix: string, module: string) {
    this.base = `${prefix}:${keyPart(module)}:`
  }

  /**
   * `prefix:module:a:b`, each part escaped.
   * @example keys.key('user', 42) // 'shop:session:user:42'
   */
  key(...parts: Array<string | number>): string {
    let key = this.base
    for (let i = 0; i < parts.length; i++) key += (i === 0 ? '' : ':') + keyPart(parts[i] as string | number)
    return key
  }

  /**
   * `prefix:module:{tag}:a:b`: every key with the same tag hashes to the same Cluster slot.
   * @example keys.tagged('daily-report', 'fence') // 'shop:lock:{daily-report}:fence'
   */
  tagged(tag: string | number, ...parts: Array<string | number>): string {
    let key = `${this.base}{${keyPart(tag)}}`
    for (const part of parts) key += `:${keyPart(part)}`
    return key
  }

  /** SCAN `MATCH` pattern for every key of the module (glob characters in the prefix escaped). */
  pattern(): string {
    return scanPattern(this.base)
  }
}

/** The kit's key space: one {@link ModuleKeys} per module, all under the kit's prefix. */
export class KeySpace {
  readonly prefix: string
  readonly #modules = new Map<string, ModuleKeys>()

  constructor(prefix: string) {
    this.prefix = prefix
  }

  /** Keys of `module` (`'cache'`, `'session'`, ... or the app's own name). */
  module(module: string): ModuleKeys {
    let keys = this.#modules.get(module)
    if (!keys) {
      keys = new ModuleKeys(this.prefix, module)
      this.#modules.set(module, keys)
    }
    return keys
  }
}
