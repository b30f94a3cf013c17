/** fastify-gateway/testing: what a team needs to unit-test its gateway with `fastify.inject`. */
export { createTestUpstream, type TestUpstream, type RecordedRequest, type UpstreamBehaviour, type UpstreamScript } from './upstream.js'
export { createIdentityProvider, type IdentityProvider, type IdentityProviderOptions, type JwksMode, type IdentityProviderAlgorithm, type IdentityProviderSignOptions } from './identity-provider.js'
export { startTestRedis, type TestRedis } from './redis.js'
export { startTestRedisCluster, type TestRedisCluster, type TestRedisClusterOptions } from './redis-cluster.js'
