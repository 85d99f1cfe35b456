export type { IndexEntry, RawSession, SessionSerializer, WritePlan, WriteResult } from './repository.js'
export { DATA_PREFIX, SessionRepository } from './repository.js'
export type { SessionRecord, SessionsOptions, UserId } from './sessions.js'
export {
  decodeFields,
  encodeFields,
  resolveSessionsOptions,
  SESSIONS_DEFAULTS,
  Sessions,
} from './sessions.js'
