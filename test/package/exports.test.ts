import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const root = resolve(import.meta.dirname, '../..')
let consumer: string

function node(code: string, type: 'module' | 'commonjs'): string {
  return execFileSync(
    process.execPath,
    [type === 'module' ? '--input-type=module' : '--input-type=commonjs', '-e', code],
    {
      cwd: consumer,
      encoding: 'utf8',
      timeout: 30_000,
    },
  )
}

beforeAll(() => {
  // Build the package exactly as `npm run build` does, then consume it by name from another folder.
  execFileSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')],
    {
      cwd: root,
      stdio: 'pipe',
      timeout: 120_000,
    },
  )
  consumer = mkdtempSync(join(tmpdir(), 'redkit-consumer-'))
  mkdirSync(join(consumer, 'node_modules'))
  symlinkSync(root, join(consumer, 'node_modules', 'redkit'), 'dir')
}, 150_000)

afterAll(() => {
  rmSync(consumer, { recursive: true, force: true })
})

describe('built package', () => {
  it('can be imported with import', () => {
    const out = node(
      `const r = await import('redkit'); const m = await import('redkit/middleware');
       console.log(typeof r.createRedkit, typeof r.ConfigError, typeof m.health)`,
      'module',
    )
    expect(out.trim()).toBe('function function function')
  })

  it('can be loaded with require()', () => {
    const out = node(
      `const r = require('redkit'); const m = require('redkit/middleware');
       const e = new r.ConfigError('x', 'is wrong', 'fix it');
       console.log(typeof r.createRedkit, e.code, typeof m.health)`,
      'commonjs',
    )
    expect(out.trim()).toBe('function E_CONFIG function')
  })

  it('ships type declarations for both entry points', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    for (const entry of ['.', './middleware']) {
      expect(existsSync(join(root, pkg.exports[entry].types as string))).toBe(true)
    }
  })
})
