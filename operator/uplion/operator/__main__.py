"""`python -m uplion.operator`: the AIModel operator (kopf), until SIGTERM.

Settings: UPLION_WATCH_NAMESPACES (comma-separated namespaces or globs it manages; empty: every
namespace), UPLION_PULSAR_URL and UPLION_PULSAR_ADMIN_URL (what workers and KEDA's scaler use),
UPLION_PULSAR_TENANT / _NAMESPACE; the Kubernetes credentials of the pod (or KUBECONFIG)."""

from __future__ import annotations

import os
import sys

import kopf

from uplion.core.logs import setup_logging

from . import handlers


def main() -> int:
    setup_logging("operator", os.environ.get("UPLION_LOG_LEVEL", "INFO"))
    assert handlers.configure is not None  # the handlers register on import
    namespaces = [n.strip() for n in os.environ.get("UPLION_WATCH_NAMESPACES", "").split(",") if n.strip()]
    if namespaces:
        kopf.run(namespaces=namespaces, standalone=True)
    else:
        kopf.run(clusterwide=True, standalone=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
