"""`python -m uplion.operator`: the AIModel operator (kopf), until SIGTERM.

Settings (operator/README.md, `settings.Settings`): UPLION_WATCH_NAMESPACES (comma-separated
namespaces or globs it manages; empty: every namespace), UPLION_PULSAR_URL and
UPLION_PULSAR_ADMIN_URL (what workers and KEDA's scaler use), UPLION_PULSAR_TENANT / _NAMESPACE /
_REPLY_NAMESPACE, and for per-model worker tokens UPLION_PULSAR_SIGNING_KEY_FILE with a superuser's
UPLION_PULSAR_TOKEN or UPLION_PULSAR_TOKEN_FILE; OTEL_EXPORTER_OTLP_ENDPOINT, handed to the workers
(docs/tracing.md); the Kubernetes credentials of the pod (or KUBECONFIG). A setting it cannot use
ends it with exit code 2."""

from __future__ import annotations

import logging
import os
import sys

import kopf

from uplion.core.aimodels import GROUP, PLURAL, VERSION
from uplion.core.config import ConfigError
from uplion.core.logs import setup_logging

from . import handlers

log = logging.getLogger("uplion.operator")


def main() -> int:
    setup_logging("operator", os.environ.get("UPLION_LOG_LEVEL", "INFO"))
    assert handlers.configure is not None  # the handlers register on import
    try:
        settings = handlers.settings()
    except ConfigError as e:
        log.error(f"configuration error: {e}")
        return 2
    if settings.tokens:
        # grants are revoked before an AIModel is gone: kopf's finalizer holds its deletion until then
        kopf.on.delete(GROUP, VERSION, PLURAL)(handlers.model_deleting)
        handlers.access()
        where = {"admin_url": settings.pulsar_admin_url, "reply_namespace": settings.pulsar.reply_namespace}
        log.info("pulsar worker tokens on: each AIModel's workers get a token of their own role and its grants",
                 extra=where)  # fmt: skip
    else:
        log.info("pulsar worker tokens off: UPLION_PULSAR_SIGNING_KEY_FILE is not set, so workers get no Pulsar "
                 "token and no grants (a broker with authentication refuses them)")  # fmt: skip
    if settings.watch_namespaces:
        kopf.run(namespaces=list(settings.watch_namespaces), standalone=True)
    else:
        kopf.run(clusterwide=True, standalone=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
