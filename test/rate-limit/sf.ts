/**
 * A small parser for the Structured Field Lists the RateLimit fields use (RFC 9651 §4.2: items
 * that are Strings or Tokens with Integer/String/Token/Byte Sequence parameters). Throws on
 * anything malformed, so a test that parses a header also checks its syntax.
 */
export interface ListItem {
  value: string
  params: Record<string, number | string | boolean>
}

export function parseList(input: string | undefined): ListItem[] {
  if (input === undefined) throw new Error('no header field to parse')
  let i = 0
  const items: ListItem[] = []
  const fail = (what: string): never => {
    throw new Error(`malformed structured field at ${i}: ${what} in ${JSON.stringify(input)}`)
  }
  const ows = () => {
    while (input[i] === ' ' || input[i] === '\t') i++
  }
  const bareItem = (): number | string | boolean => {
    const c = input[i]
    if (c === '"') {
      i++
      let out = ''
      while (i < input.length && input[i] !== '"') {
        if (input[i] === '\\') i++
        out += input[i++]
      }
      if (input[i] !== '"') fail('unterminated string')
      i++
      return out
    }
    if (c === ':') {
      const end = input.indexOf(':', i + 1)
      if (end === -1) fail('unterminated byte sequence')
      const out = input.slice(i + 1, end)
      i = end + 1
      return `:${out}:`
    }
    if (c === '?') {
      i += 2
      return input[i - 1] === '1'
    }
    const num = /^-?\d{1,15}/.exec(input.slice(i))
    if (num) {
      i += num[0].length
      if (input[i] === '.') fail('decimals are not used here')
      return Number(num[0])
    }
    const token = /^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*/.exec(input.slice(i))
    if (!token) return fail('expected a bare item')
    i += token[0].length
    return token[0]
  }
  while (i < input.length) {
    const value = bareItem()
    if (typeof value !== 'string') fail('item value must be a string or token')
    const params: ListItem['params'] = {}
    while (input[i] === ';') {
      i++
      const key = /^[a-z*][a-z0-9_\-.*]*/.exec(input.slice(i))
      if (!key) fail('bad parameter key')
      i += key![0].length
      if (input[i] === '=') {
        i++
        params[key![0]] = bareItem()
      } else params[key![0]] = true
    }
    items.push({ value: value as string, params })
    ows()
    if (i >= input.length) break
    if (input[i] !== ',') fail('expected a comma')
    i++
    ows()
    if (i >= input.length) fail('trailing comma')
  }
  return items
}
