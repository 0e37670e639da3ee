"""The Go rate limiter's own cluster test (ratelimit/internal/limiter/cluster_integration_test.go,
build tag `clustertest`) against the real 3-master cluster: exact limits across two clients, the
undo of a refused request (fixed window and GCRA), the reservation and its TTL, the probe."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from uplion.devstack.redis import RedisCluster

MODULE = Path(__file__).resolve().parents[2] / "ratelimit"


def test_the_limiter_package_passes_its_cluster_test(redis_cluster: RedisCluster) -> None:
    go = shutil.which("go")
    assert go, "Go is needed on PATH (scripts/bootstrap.sh installs it)"
    env = {**os.environ, "UPLION_TEST_REDIS_CLUSTER_URL": redis_cluster.url}
    done = subprocess.run(
        [go, "test", "-count=1", "-tags", "clustertest", "-run", "TestCluster", "-v", "./internal/limiter"],
        cwd=MODULE, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "--- PASS: TestCluster" in done.stdout
    assert "SKIP" not in done.stdout
