import type { Cluster, Redis } from 'ioredis'

/**
 * Runs `action` and returns, in order, when `client` sent its DEL and PUBLISH commands and when a
 * DEL was answered. The commands still go to Redis; the client's own methods are back afterwards.
 */
export async function deleteAndPublishOrder(
  client: Redis | Cluster,
  action: () => Promise<unknown>,
): Promise<string[]> {
  const seen: string[] = []
  const del = client.del.bind(client) as (...keys: string[]) => Promise<number>
  const publish = client.publish.bind(client) as (channel: string, message: string) => Promise<number>
  Object.assign(client, {
    del: (...keys: string[]) => {
      seen.push('DEL sent')
      return del(...keys).finally(() => seen.push('DEL answered'))
    },
    publish: (channel: string, message: string) => {
      seen.push('PUBLISH sent')
      return publish(channel, message)
    },
  })
  try {
    await action()
  } finally {
    const own = client as unknown as Record<string, unknown>
    delete own.del
    delete own.publish
  }
  return seen
}
