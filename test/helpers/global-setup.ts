import { assertRedisInstalled } from './redis-server.js'

/** Fails the whole run at once, with the install command, when redis-server is missing. */
export default function setup(): void {
  assertRedisInstalled()
}
