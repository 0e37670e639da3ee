"""Session-wide real services, started once on free loopback ports and stopped by PID."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.kube_api import eventually
from uplion.devstack.kube import Kube, start_kube
from uplion.devstack.postgres import Postgres, start_postgres
from uplion.devstack.pulsar import Pulsar, start_pulsar
from uplion.devstack.redis import Redis, start_redis

ROOT = Path(__file__).resolve().parents[1]
CRDS = [
    "aimodels.uplion.io.yaml",
    "test-only-keda-scaledobjects.yaml",
    "test-only-keda-triggerauthentications.yaml",
    "test-only-prometheusrules.yaml",
]


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="uplion-test-"))
    d.chmod(0o755)
    yield d
    if not os.environ.get("UPLION_KEEP_RUN_DIR"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(run_dir: Path) -> Iterator[Pulsar]:
    """Pulsar with token authentication and authorization on (docs/pulsar-auth.md): the devstack's
    service starters give each service its role's token; a test's own client uses
    `broker.authentication()` (the superuser)."""
    p = start_pulsar(run_dir / "pulsar")
    yield p
    p.stop()


@pytest.fixture(scope="session")
def postgres(run_dir: Path) -> Iterator[Postgres]:
    p = start_postgres(run_dir / "postgres")
    yield p
    p.stop()


@pytest.fixture(scope="session")
def kube(run_dir: Path) -> Iterator[Kube]:
    """A real control plane (etcd, kube-apiserver, kube-controller-manager) with uplion's CRDs (and
    test-only stand-ins for KEDA's ScaledObject and TriggerAuthentication and the Prometheus
    Operator's PrometheusRule CRDs)
    established; the default kubeconfig points at it."""
    k = start_kube(run_dir / "kube")
    config.load_kube_config(str(k.kubeconfig))
    ext = client.ApiextensionsV1Api()
    for name in CRDS:
        ext.create_custom_resource_definition(yaml.safe_load((ROOT / "deploy" / "crds" / name).read_text()))

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in (
        "aimodels.uplion.io",
        "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
        "prometheusrules.monitoring.coreos.com",
    ):
        eventually(lambda n=name: established(n))  # type: ignore[misc]
    yield k
    k.stop()


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[Redis]:
    r = start_redis(run_dir / "redis")
    yield r
    r.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No silent skips: a skipped test fails the run (a missing tool is an install step, not a skip)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0:
        reasons = sorted({str(getattr(r, "longrepr", "")) for r in skipped})
        print(f"\n{len(skipped)} test(s) skipped; the suite allows none: {reasons}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
