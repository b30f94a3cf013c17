// @fastify/rate-limit ships no types for its stores (used by lib/internal/memory-store.ts only).
declare module '@fastify/rate-limit/store/LocalStore.js' {
  const LocalStore: unknown
  export default LocalStore
}
