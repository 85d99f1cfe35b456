export type {
  AnalyticsOptions,
  AnalyticsStats,
  FlushResult,
  Granularity,
  PageViewOptions,
  PrometheusExporter,
  PrometheusOptions,
  RangeOptions,
  RankedItem,
  RecentEvent,
  RequestSample,
  ResolvedAnalyticsOptions,
  SeriesOptions,
  SeriesPoint,
  TopOptions,
} from './analytics/index.js'
export {
  ANALYTICS_DEFAULTS,
  Analytics,
  createPrometheusExporter,
  loadPromClient,
  visitorFingerprint,
} from './analytics/index.js'
export type {
  CachedFunction,
  CachedMethodOptions,
  CachedOptions,
  CacheEngineOptions,
  FactoryContext,
  GetOrSetOptions,
  InvalidationMark,
  RawEntry,
  SetOptions,
  TagSnapshot,
  WriteEntryOptions,
} from './cache/index.js'
export {
  argumentsKey,
  CACHE_DEFAULTS,
  CacheEngine,
  cached,
  cachedMethod,
  SingleFlight,
} from './cache/index.js'
export type { EncodeOptions } from './codec/index.js'
export { decode, encode } from './codec/index.js'
export type {
  BreakerOptions,
  ClusterConfig,
  HostPort,
  RedisInput,
  RedkitOptions,
  SentinelConfig,
} from './connection/config.js'
export { REDKIT_DEFAULTS } from './connection/config.js'
export type { HealthReport, MessageHandler, RedisClient } from './connection/hub.js'
export { ConnectionHub, isConnectionError } from './connection/hub.js'
export type { LockErrorContext } from './errors.js'
export {
  CodecError,
  ConfigError,
  ConnectionError,
  LockBusyError,
  LockError,
  LockLostError,
  LockUnavailableError,
  QueryInputError,
  RateLimitQueueError,
  RedkitError,
  SessionConflictError,
  SessionTooLargeError,
} from './errors.js'
export type { RedisAddress, RedkitEventMap, RedkitEventName, RedkitListener, TopologyKind } from './events.js'
export { RedkitEvents } from './events.js'
export { HOP_BY_HOP_FIELDS } from './http-cache/index.js'
export { KeySpace, keyPart, ModuleKeys, scanPattern } from './keys.js'
export { createRedkit, Redkit } from './kit.js'
export type {
  AcquireOptions,
  IdempotencyBegin,
  LockServer,
  LocksOptions,
  OnceOptions,
  RetryOptions,
  StoredResponse,
  UsingOptions,
} from './lock/index.js'
export { createLocks, IdempotencyStore, LOCKS_DEFAULTS, Lock, Locks } from './lock/index.js'
export type {
  CachedPoolOptions,
  CachedPoolQueryOptions,
  CachedQueryResult,
  PgQueryable,
  PgResultLike,
  QueryCacheOptions,
  QueryOptions,
  QueryParams,
} from './query-cache/index.js'
export {
  CachedPool,
  cachedPool,
  isEmptyResult,
  looksLikeRead,
  normalizeQuery,
  QUERY_CACHE_DEFAULTS,
  QueryCache,
  queryKey,
} from './query-cache/index.js'
export type {
  BlockOptions,
  ConsumeOptions,
  FailureLimit,
  LimitOptions,
  LimitState,
  LoginAttempt,
  LoginGuardOptions,
  OnRedisError,
  QueueOptions,
  QueueSettings,
  RateLimitPolicyOptions,
  RateLimitResult,
  RateLimitSource,
  TakeOptions,
} from './rate-limit/index.js'
export {
  INVALID_IP,
  ipKey,
  LoginGuard,
  normalizeCost,
  OutboundQueue,
  RateLimitPolicy,
  RateLimits,
  rateLimitField,
  UNKNOWN_IP,
} from './rate-limit/index.js'
export type {
  IndexEntry,
  RawSession,
  SessionRecord,
  SessionSerializer,
  SessionsOptions,
  UserId,
  WritePlan,
  WriteResult,
} from './session/index.js'
export { SESSIONS_DEFAULTS, SessionRepository, Sessions } from './session/index.js'
export type { Duration } from './util/duration.js'
export { parseDuration } from './util/duration.js'
export { LuaScript } from './util/script.js'
