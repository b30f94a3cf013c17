import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', '.tap/**', 'node_modules/**', 'coverage/**'] }),
  {
    rules: {
      // reply-from's and Fastify's generic hook types need `any` at a few boundaries.
      '@typescript-eslint/no-explicit-any': 'off'
    }
  }
]
