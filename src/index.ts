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
export { ConfigError, ConnectionError, RedkitError } from './errors.js'
export type { RedisAddress, RedkitEventMap, RedkitEventName, RedkitListener, TopologyKind } from './events.js'
export { RedkitEvents } from './events.js'
export { KeySpace, keyPart, ModuleKeys } from './keys.js'
export { createRedkit, Redkit } from './kit.js'
export type { Duration } from './util/duration.js'
export { parseDuration } from './util/duration.js'
export { LuaScript } from './util/script.js'
