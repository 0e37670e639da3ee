"""Go programs the tests and benchmarks run beside uplion (load generators, reference services),
built from the Go module proxy once and cached outside git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .pulsar import cache_dir

GHZ = ("github.com/bojand/ghz/cmd/ghz", "v0.93.0")


def go_binary(package: str, version: str, timeout: float = 900.0) -> Path:
    """`go install package@version` into the cache (once); the binary's path."""
    name = package.rstrip("/").rsplit("/", 1)[-1]
    bin_dir = cache_dir() / "go" / f"{name}-{version}"
    binary = bin_dir / name
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(f"building {package} needs the go command")
    env = {**os.environ, "GOBIN": str(bin_dir), "CGO_ENABLED": "0"}
    subprocess.run([go, "install", f"{package}@{version}"], env=env, check=True, timeout=timeout)
    return binary


def ghz() -> Path:
    return go_binary(*GHZ)


# The reference rate-limit service (envoyproxy/ratelimit), for conformance tests and benchmarks.
REFERENCE_RATELIMIT = ("github.com/envoyproxy/ratelimit/src/service_cmd", "v1.4.1-0.20260122083618-3fb702589d36")


def reference_ratelimit() -> Path:
    return go_binary(*REFERENCE_RATELIMIT)
