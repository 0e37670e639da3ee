"""Go programs the tests and benchmarks run beside uplion (load generators, reference services,
the Kubernetes control plane), built from the Go module proxy once and cached outside git."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .pulsar import cache_dir

GHZ = ("github.com/bojand/ghz/cmd/ghz", "v0.93.0")
# The reference rate-limit service (envoyproxy/ratelimit), for conformance tests and benchmarks.
REFERENCE_RATELIMIT = ("github.com/envoyproxy/ratelimit/src/service_cmd", "v1.4.1-0.20260122083618-3fb702589d36")


def go_command() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building the Go tools the tests use needs the go command")
    return go


def go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", **extra}


def _cached(name: str, version: str) -> tuple[Path, bool]:
    """Where a built tool lives, and whether it is there already."""
    binary = cache_dir() / "go" / f"{name}-{version}" / name
    return binary, binary.exists()


def go_binary(package: str, version: str, timeout: float = 900.0) -> Path:
    """`go install package@version` into the cache (once); the binary's path."""
    binary, ready = _cached(package.rstrip("/").rsplit("/", 1)[-1], version)
    if not ready:
        env = go_env(GOBIN=str(binary.parent))
        subprocess.run([go_command(), "install", f"{package}@{version}"], env=env, check=True, timeout=timeout)
    return binary


def go_module_binary(package: str, version: str, name: str, timeout: float = 1800.0) -> Path:
    """Build the main package at the root of a module that cannot be `go install`ed (its go.mod has
    replace directives): a throwaway module requires it, then `go build`. Cached like go_binary."""
    binary, ready = _cached(name, version)
    if ready:
        return binary
    go, env = go_command(), go_env(GOFLAGS="-mod=mod")
    with tempfile.TemporaryDirectory(prefix="uplion-go-build-") as tmp:
        subprocess.run([go, "mod", "init", "uplionbuild"], cwd=tmp, env=env, check=True, capture_output=True)
        subprocess.run([go, "get", f"{package}@{version}"], cwd=tmp, env=env, check=True, timeout=timeout)
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([go, "build", "-o", str(binary), package], cwd=tmp, env=env, check=True, timeout=timeout)
    return binary


def ghz() -> Path:
    return go_binary(*GHZ)


def reference_ratelimit() -> Path:
    return go_binary(*REFERENCE_RATELIMIT)


# uplion's own rate-limit service (Go), built from this checkout: ratelimit/cmd/uplion-ratelimit.
RATELIMIT_MODULE = Path(__file__).resolve().parents[3] / "ratelimit"
_SOURCE_SUFFIXES = {".go", ".mod", ".sum", ".lua", ".yaml"}


def _source_digest(module: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(module.rglob("*")):
        if p.is_file() and p.suffix in _SOURCE_SUFFIXES and "uplion" not in p.relative_to(module).parts[:1]:
            h.update(str(p.relative_to(module)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ratelimit_binary(timeout: float = 900.0) -> Path:
    """The `uplion-ratelimit` binary of this checkout's sources (rebuilt when they change); the
    UPLION_RATELIMIT_BINARY environment variable names a prebuilt one instead."""
    prebuilt = os.environ.get("UPLION_RATELIMIT_BINARY")
    if prebuilt:
        return Path(prebuilt)
    binary, ready = _cached("uplion-ratelimit", _source_digest(RATELIMIT_MODULE))
    if not ready:
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([go_command(), "build", "-trimpath", "-o", str(partial), "./cmd/uplion-ratelimit"],
                       cwd=RATELIMIT_MODULE, env=go_env(), check=True, timeout=timeout)  # fmt: skip
        partial.rename(binary)
    return binary
