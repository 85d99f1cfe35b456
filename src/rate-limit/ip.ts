import { isIPv4, isIPv6 } from 'node:net'

/** Key used for a request whose client address is missing (socket already closed). */
export const UNKNOWN_IP = 'unknown-ip'
/**
 * Key used for a client address that is not an IP (a forged `X-Forwarded-For` read under a
 * permissive `trust proxy`): every such request shares one bucket, so rotating garbage values
 * cannot buy fresh limits.
 */
export const INVALID_IP = 'invalid-ip'

/**
 * The rate-limit key of a client address: IPv4 as is, IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the
 * IPv4 address, other IPv6 addresses grouped by their first `ipv6Subnet` bits (`2001:db8:1:2::/64`),
 * since one subscriber usually holds a whole /64 and could otherwise rotate addresses at will.
 *
 * @example
 * ipKey('::ffff:10.0.0.1', 64) // '10.0.0.1'
 * ipKey('2001:db8::1', 64) // '2001:db8::/64'
 */
export function ipKey(ip: string | undefined, ipv6Subnet: number): string {
  if (!ip) return UNKNOWN_IP
  if (isIPv4(ip)) return ip
  // Zone identifiers (fe80::1%eth0) name a local interface, not a client.
  const zone = ip.indexOf('%')
  const address = zone === -1 ? ip : ip.slice(0, zone)
  if (!isIPv6(address)) return INVALID_IP
  const groups = expandIPv6(address)
  if (isMappedIPv4(groups)) {
    const hi = groups[6] as number
    const lo = groups[7] as number
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`
  }
  if (ipv6Subnet >= 128) return formatIPv6(groups)
  return `${formatIPv6(maskGroups(groups, ipv6Subnet))}/${ipv6Subnet}`
}

function isMappedIPv4(groups: number[]): boolean {
  for (let i = 0; i < 5; i++) if (groups[i] !== 0) return false
  return groups[5] === 0xffff
}

/** Eight 16-bit groups of a valid IPv6 address (embedded IPv4 tail included). */
function expandIPv6(address: string): number[] {
  let text = address.toLowerCase()
  const tail: number[] = []
  const lastColon = text.lastIndexOf(':')
  const last = text.slice(lastColon + 1)
  if (last.includes('.')) {
    const [a, b, c, d] = last.split('.').map(Number) as [number, number, number, number]
    tail.push((a << 8) | b, (c << 8) | d)
    text = `${text.slice(0, lastColon + 1)}0`
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined]
  const headGroups = head ? head.split(':') : []
  const restGroups = rest ? rest.split(':') : []
  // The placeholder '0' that stood for the IPv4 tail.
  if (tail.length) (rest !== undefined ? restGroups : headGroups).pop()
  const missing = 8 - tail.length - headGroups.length - restGroups.length
  const hex = [...headGroups, ...Array(rest === undefined ? 0 : missing).fill('0'), ...restGroups]
  return [...hex.map((g) => Number.parseInt(g, 16)), ...tail]
}

function maskGroups(groups: number[], bits: number): number[] {
  return groups.map((group, i) => {
    const keep = Math.max(0, Math.min(16, bits - i * 16))
    return keep === 0 ? 0 : group & ((0xffff << (16 - keep)) & 0xffff)
  })
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run of two or more zero groups as `::`. */
function formatIPv6(groups: number[]): string {
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart === -1) return hex.join(':')
  const left = hex.slice(0, bestStart).join(':')
  const right = hex.slice(bestStart + bestLength).join(':')
  return `${left}::${right}`
}
