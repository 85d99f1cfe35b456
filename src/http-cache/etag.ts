import { createHash } from 'node:crypto'

/**
 * A strong entity-tag for a body (RFC 9110 §8.8.3): a SHA-1 of the exact bytes, so two
 * encodings of one resource (identity and gzip) get different tags, as strong tags must.
 */
export function strongEtag(body: Buffer | readonly Buffer[]): string {
  const h = createHash('sha1')
  if (Buffer.isBuffer(body)) h.update(body)
  else for (const chunk of body) h.update(chunk)
  return `"${h.digest('base64url')}"`
}
