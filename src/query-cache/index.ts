export { normalizeQuery, QUERY_KEY_VERSION, queryKey } from './key.js'
export type {
  CachedPoolOptions,
  CachedPoolQueryOptions,
  CachedQueryResult,
  PgQueryable,
  PgResultLike,
} from './pg.js'
export { CachedPool, cachedPool, looksLikeRead } from './pg.js'
export type { QueryCacheOptions, QueryOptions, QueryParams } from './query-cache.js'
export { isEmptyResult, QUERY_CACHE_DEFAULTS, QueryCache } from './query-cache.js'
