"""uplion ratelimit: an Envoy-compatible rate-limit service with exact RPM and reserved TPM."""
