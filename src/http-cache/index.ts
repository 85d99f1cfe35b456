/**
 * HTTP semantics for stored responses (RFC 9111 shared cache): storability and freshness,
 * request directives, Vary, validators, and the binary entry layout. Independent of Express and
 * of where entries are stored.
 */
export type { Directives, HeaderMap, HeaderValue } from './cache-control.js'
export { headerText, parseCacheControl, parseHttpDate, splitList } from './cache-control.js'
export type { Captured, CaptureOptions } from './capture.js'
export { captureResponse, mergeHeaderArgument } from './capture.js'
export type { ResponseEntry, StoredEntry, StoredHeader, StoredMeta, VaryMarker } from './entry.js'
export { decodeEntry, encodeResponse, encodeVaryMarker } from './entry.js'
export { strongEtag } from './etag.js'
export type { QueryKeyOptions, ResolvedQueryKey } from './key.js'
export {
  hash,
  isValidHost,
  isValidScheme,
  normalizeQuery,
  parseVary,
  splitTarget,
  urlKey,
  variantId,
} from './key.js'
export type { Evaluation, FreshnessOptions, RequestHead, ResponseHead, StoreDecision } from './policy.js'
export {
  changedOnTheWay,
  currentAge,
  decideStore,
  evaluate,
  HOP_BY_HOP_FIELDS,
  NOT_MODIFIED_HEADERS,
  notModified,
  onlyIfCached,
  requestNoStore,
} from './policy.js'
