/** The part of apicache (which ships no types) that the response-cache bench uses. */
declare module 'apicache' {
  import type { RequestHandler } from 'express'

  interface ApiCacheInstance {
    middleware(duration?: string | number): RequestHandler
  }
  const apicache: ApiCacheInstance & { newInstance(options?: { defaultDuration?: string }): ApiCacheInstance }
  export default apicache
}
