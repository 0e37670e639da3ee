"""`python -m uplion.operator`: the AIModel operator (kopf), cluster-wide, until SIGTERM.

Settings: UPLION_PULSAR_URL and UPLION_PULSAR_ADMIN_URL (what workers and KEDA's scaler use),
UPLION_PULSAR_TENANT / _NAMESPACE; the Kubernetes credentials of the pod (or KUBECONFIG)."""

from __future__ import annotations

import sys

import kopf

from uplion.core.logs import setup_logging

from . import handlers


def main() -> int:
    setup_logging("operator", "INFO")
    assert handlers.configure is not None  # the handlers register on import
    kopf.run(clusterwide=True, standalone=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
