"""uplion authz: Envoy ext_authz Check for API keys and quotas, decided from Redis."""
