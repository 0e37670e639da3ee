"""Go programs the tests and benchmarks run beside uplion (load generators, reference services,
the Kubernetes control plane), built from the Go module proxy once and cached outside git."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from .cache import Recipe, build

GHZ = ("github.com/bojand/ghz/cmd/ghz", "v0.93.0")
# Prometheus's promtool (module versions v0.3xx.y are Prometheus 3.x releases)
PROMTOOL = ("github.com/prometheus/prometheus/cmd/promtool", "v0.316.0")
# The reference rate-limit service (envoyproxy/ratelimit), for conformance tests and benchmarks.
REFERENCE_RATELIMIT = ("github.com/envoyproxy/ratelimit/src/service_cmd", "v1.4.1-0.20260122083618-3fb702589d36")
# grpcurl, the command-line gRPC client (server reflection, every streaming shape), for the edge's native gRPC tests
GRPCURL = ("github.com/fullstorydev/grpcurl/cmd/grpcurl", "v1.9.4")
# vegeta, a constant-rate HTTP load generator (the soak benchmark, bench/soak.py)
VEGETA = ("github.com/tsenart/vegeta/v12", "v12.13.0")


def go_command() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("building the Go tools uplion runs needs go (1.21+) on PATH: https://go.dev/doc/install")
    return go


_GO_FLAGS = {"CGO_ENABLED": "0"}


def go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **_GO_FLAGS, **extra}


@cache
def go_version(cwd: Path | None = None) -> str:
    """The toolchain `go` picks in `cwd` (a go.mod may ask for a newer one, fetched through the proxy)."""
    out = subprocess.run([go_command(), "env", "GOVERSION", "GOOS", "GOARCH"], cwd=cwd, env=go_env(),
                         capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    return " ".join(out.stdout.split())


def go_recipe(name: str, cwd: Path | None = None, **inputs: str | bytes) -> Recipe:
    """A Go-built artifact's recipe: its own inputs, the toolchain (the one `go` picks in `cwd`)
    and the build environment."""
    return Recipe(name, {"go": go_version(cwd), **{f"env.{k}": v for k, v in _GO_FLAGS.items()}, **inputs})


def go_binary(package: str, version: str, timeout: float = 900.0) -> Path:
    """`go install package@version` into the cache (once per recipe); the binary's path."""
    name = package.rstrip("/").rsplit("/", 1)[-1]
    recipe = go_recipe(name, package=package, version=version, command="go install")

    def make(out: Path) -> None:
        subprocess.run([go_command(), "install", f"{package}@{version}"], env=go_env(GOBIN=str(out)), check=True,
                       timeout=timeout)  # fmt: skip

    return build(recipe, make) / name


def go_module_binary(package: str, version: str, name: str, timeout: float = 1800.0) -> Path:
    """Build the main package at the root of a module that cannot be `go install`ed (its go.mod has
    replace directives): a throwaway module requires it, then `go build`. Cached like go_binary."""
    recipe = go_recipe(name, package=package, version=version, command="go mod init; go get; go build")

    def make(out: Path) -> None:
        go, env = go_command(), go_env(GOFLAGS="-mod=mod")
        with tempfile.TemporaryDirectory(prefix="uplion-go-build-") as tmp:
            subprocess.run([go, "mod", "init", "uplionbuild"], cwd=tmp, env=env, check=True, capture_output=True)
            subprocess.run([go, "get", f"{package}@{version}"], cwd=tmp, env=env, check=True, timeout=timeout)
            subprocess.run([go, "build", "-o", str(out / name), package], cwd=tmp, env=env, check=True, timeout=timeout)

    return build(recipe, make) / name


def ghz() -> Path:
    return go_binary(*GHZ)


def reference_ratelimit() -> Path:
    return go_binary(*REFERENCE_RATELIMIT)


def grpcurl() -> Path:
    return go_binary(*GRPCURL)


def vegeta() -> Path:
    """Its go.mod has replace directives, so it is built, not `go install`ed."""
    return go_module_binary(*VEGETA, "vegeta")


def promtool() -> Path:
    """Prometheus's rule checker (deploy/monitoring's alert rules and their unit tests)."""
    return go_binary(*PROMTOOL, timeout=1800.0)


# uplion's own rate-limit service (Go), built from this checkout: ratelimit/cmd/uplion-ratelimit.
RATELIMIT_MODULE = Path(__file__).resolve().parents[3] / "ratelimit"
_SOURCE_SUFFIXES = {".go", ".mod", ".sum", ".lua", ".yaml"}
_RATELIMIT_BUILD = ["build", "-trimpath", "-o"]


def source_digest(module: Path) -> str:
    """A hash of a Go module's sources (not the Python package that shares its folder)."""
    h = hashlib.sha256()
    for p in sorted(module.rglob("*")):
        if p.is_file() and p.suffix in _SOURCE_SUFFIXES and "uplion" not in p.relative_to(module).parts[:1]:
            h.update(str(p.relative_to(module)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def ratelimit_recipe() -> Recipe:
    return go_recipe("uplion-ratelimit", RATELIMIT_MODULE, sources=source_digest(RATELIMIT_MODULE),
                     command=" ".join(_RATELIMIT_BUILD))  # fmt: skip


def ratelimit_binary(timeout: float = 900.0) -> Path:
    """The `uplion-ratelimit` binary of this checkout's sources (rebuilt when they change); the
    UPLION_RATELIMIT_BINARY environment variable names a prebuilt one instead."""
    prebuilt = os.environ.get("UPLION_RATELIMIT_BINARY")
    if prebuilt:
        return Path(prebuilt)

    def make(out: Path) -> None:
        subprocess.run([go_command(), *_RATELIMIT_BUILD, str(out / "uplion-ratelimit"), "./cmd/uplion-ratelimit"],
                       cwd=RATELIMIT_MODULE, env=go_env(), check=True, timeout=timeout)  # fmt: skip

    return build(ratelimit_recipe(), make) / "uplion-ratelimit"


# uplion's OpenTelemetry Collector (devstack/otelcol: the OTLP receiver, the batch processor and the
# file exporter, every collector module at one release), built from this checkout's module.
OTELCOL_MODULE = Path(__file__).resolve().parents[2] / "otelcol"
_OTELCOL_BUILD = ["build", "-trimpath", "-o"]


def otelcol_recipe() -> Recipe:
    return go_recipe("uplion-otelcol", OTELCOL_MODULE, sources=source_digest(OTELCOL_MODULE),
                     command=" ".join(_OTELCOL_BUILD))  # fmt: skip


def otelcol_binary(timeout: float = 1800.0) -> Path:
    """The `uplion-otelcol` binary of devstack/otelcol (rebuilt when its go.mod, go.sum or main.go
    change)."""

    def make(out: Path) -> None:
        subprocess.run([go_command(), *_OTELCOL_BUILD, str(out / "uplion-otelcol"), "."], cwd=OTELCOL_MODULE,
                       env=go_env(), check=True, timeout=timeout)  # fmt: skip

    return build(otelcol_recipe(), make) / "uplion-otelcol"
