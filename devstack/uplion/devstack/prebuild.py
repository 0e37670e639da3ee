"""`python -m uplion.devstack.prebuild`: everything the test suite builds or fetches, made before
pytest starts (scripts/test.sh runs it), one step after another with its time: on a cold cache no
single test then pays for a build longer than its timeout, and the log says where the time went.
Each step is a cache lookup when its recipe is unchanged. Last, the cache folders superseded by
changed recipes are removed (`cache.prune`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import cache, console, gotools, helm, images, kube, node, pulsar, tofu

ROOT = Path(__file__).resolve().parents[3]
NODE_PROJECTS = ("tests/node", "tests/web/e2e", "web")

STEPS: list[tuple[str, Callable[[], object]]] = [
    ("Apache Pulsar's jars", pulsar.ensure_jars),
    ("the rate limiter (Go)", gotools.ratelimit_binary),
    ("the reference rate limiter", gotools.reference_ratelimit),
    ("the OpenTelemetry Collector (Go)", gotools.otelcol_binary),
    ("etcd", kube.etcd_binary),
    ("kube-apiserver and kube-controller-manager", kube.kubernetes_binaries),
    ("helm", helm.helm_binary),
    ("istioctl and Istio's CRDs", lambda: (helm.istioctl_binary(), helm.istio_crds())),
    ("promtool", gotools.promtool),
    ("grpcurl", gotools.grpcurl),
    ("vegeta (the soak benchmark's load generator)", gotools.vegeta),
    ("OpenTofu and its providers", lambda: (tofu.tofu_binary(), tofu.provider_mirror())),
    (
        "the Node suites' packages",
        lambda: [node.node_modules(ROOT / d) for d in ("tests/node", "tests/web/e2e", "web")],
    ),
    # the AI SDK suite (tests/node/ai-sdk.test.mjs) needs Node.js 22+: the `node` on PATH when it is,
    # else Node.js 22 from the npm registry into the cache (tests/edge/test_node_sdk.py, AI_SDK_NODE)
    ("Node.js 22 for the AI SDK suite", lambda: node.node_binary(22)),
    ("the web console's build", console.console_assets),
    ("the container images", lambda: [images.build_image(name) for name in images.IMAGES]),
]


def main() -> int:
    total = time.monotonic()
    for name, step in STEPS:
        started = time.monotonic()
        print(f"prebuild: {name} ...", flush=True)
        step()
        print(f"prebuild: {name}: {time.monotonic() - started:.0f} s", flush=True)
    removed = cache.prune()
    if removed:
        freed = sum(size for _, size in removed) / 1e9
        print(f"prebuild: removed {len(removed)} superseded cache folders ({freed:.1f} GB)", flush=True)
    print(f"prebuild: done in {time.monotonic() - total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
