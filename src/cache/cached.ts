import { createHash } from 'node:crypto'
import { encode } from '../codec/index.js'
import { ConfigError } from '../errors.js'
import type { Redkit } from '../kit.js'
import type { CacheEngine, GetOrSetOptions } from './engine.js'

/** Options of {@link cached}: those of `getOrSet` plus how keys and tags come from arguments. */
export interface CachedOptions<A extends unknown[], R> extends Omit<GetOrSetOptions<R>, 'tags'> {
  /**
   * First part of every key; must be unique per memoized function.
   * @default the function's name (required for anonymous functions)
   */
  name?: string
  /**
   * Key from the arguments.
   * @default SHA-256 of the encoded arguments (types kept: `1` and `'1'` differ)
   */
  key?: (...args: A) => string
  /** Tags, fixed or from the arguments. @default [] */
  tags?: readonly string[] | ((...args: A) => readonly string[])
  /** Engine (namespace) to cache in. @default kit.cache */
  cache?: CacheEngine
}

/** A memoized async function, with helpers to address its entries. */
export interface CachedFunction<A extends unknown[], R> {
  (...args: A): Promise<R>
  /** The cache key used for `args`. */
  keyFor(...args: A): string
  /** Deletes the entry for `args` (in every instance). */
  invalidate(...args: A): Promise<void>
}

/** Key of one call: `name:` + base64url SHA-256 of the typed encoding of the arguments. */
export function argumentsKey(name: string, args: readonly unknown[]): string {
  return `${name}:${createHash('sha256').update(encode(args)).digest('base64url')}`
}

/**
 * Memoizes an async function in the cache engine: key from its arguments, with stale serving
 * (`grace`), `staleIfError` and stampede protection (once per key across instances).
 * Arguments must be encodable (data, not functions); otherwise the call rejects with `CodecError`.
 *
 * @example
 * const getProduct = cached(kit, async function getProduct(id: string) { return db.product(id) }, { ttl: '5m', grace: '1m' })
 * await getProduct('42')
 */
export function cached<A extends unknown[], R>(
  kit: Redkit,
  fn: (...args: A) => Promise<R>,
  options: CachedOptions<A, R> = {},
): CachedFunction<A, R> {
  const name = options.name ?? fn.name
  if (!name) {
    throw new ConfigError(
      'cached.name',
      'is missing for an anonymous function',
      "pass { name: 'getProduct' }",
    )
  }
  const { key: keyOption, tags: tagsOption, cache: cacheOption, name: _name, ...rest } = options
  const keyFor = (...args: A): string =>
    keyOption ? `${name}:${keyOption(...args)}` : argumentsKey(name, args)
  const engine = (): CacheEngine => cacheOption ?? kit.cache
  const memoized = ((...args: A): Promise<R> => {
    let key: string
    try {
      key = keyFor(...args)
    } catch (error) {
      return Promise.reject(error)
    }
    const tags = typeof tagsOption === 'function' ? tagsOption(...args) : tagsOption
    return engine().getOrSet(key, () => fn(...args), tags ? { ...rest, tags } : rest)
  }) as CachedFunction<A, R>
  memoized.keyFor = keyFor
  memoized.invalidate = (...args: A) => engine().delete(keyFor(...args))
  return memoized
}

/** Options of {@link cachedMethod}. */
export interface CachedMethodOptions<This, A extends unknown[], R> extends Omit<CachedOptions<A, R>, 'key'> {
  /**
   * Key from the instance and the arguments (use it when results differ per instance).
   * @default the arguments only (instances share entries)
   */
  key?: (self: This, ...args: A) => string
}

/**
 * TypeScript 5 standard method decorator: memoizes an async method like {@link cached}. The kit
 * is given explicitly (an instance, or a function receiving `this`), so there is no hidden
 * global. The key starts with `ClassName.method` unless `name` is given.
 *
 * @example
 * class Reports {
 *   constructor(readonly kit: Redkit) {}
 *   @cachedMethod((self: Reports) => self.kit, { ttl: '10m', tags: ['reports'] })
 *   async daily(day: string) { return build(day) }
 * }
 */
export function cachedMethod<This, A extends unknown[], R>(
  kit: Redkit | ((self: This) => Redkit),
  options: CachedMethodOptions<This, A, R> = {},
) {
  return function decorate(
    target: (this: This, ...args: A) => Promise<R>,
    context: ClassMethodDecoratorContext<This, (this: This, ...args: A) => Promise<R>>,
  ): (this: This, ...args: A) => Promise<R> {
    const method = String(context.name)
    const { key: keyOption, tags: tagsOption, cache: cacheOption, name: nameOption, ...rest } = options
    return function cachedMethodCall(this: This, ...args: A): Promise<R> {
      const owner = typeof kit === 'function' ? kit(this) : kit
      const className = (this as { constructor?: { name?: string } })?.constructor?.name ?? 'anonymous'
      const name = nameOption ?? `${className}.${method}`
      let key: string
      try {
        key = keyOption ? `${name}:${keyOption(this, ...args)}` : argumentsKey(name, args)
      } catch (error) {
        return Promise.reject(error)
      }
      const tags = typeof tagsOption === 'function' ? tagsOption(...args) : tagsOption
      const engine = cacheOption ?? owner.cache
      return engine.getOrSet(key, () => target.apply(this, args), tags ? { ...rest, tags } : rest)
    }
  }
}
