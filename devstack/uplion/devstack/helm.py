"""Deploy tooling for the chart's tests: the `helm` and `istioctl` binaries, built from the Go module
proxy, and Istio's CRDs from the same Istio source, all through the build cache.

Istio publishes no semver tags, so `istio.io/istio` is pinned by pseudo-version. The module proxy
these machines reach serves only a few pseudo-versions of it (`go list -m -versions` is empty;
`https://proxy.golang.org/istio.io/istio/@v/list` lists three); a release tag's commit (1.28.0's
b8d1df544650, 1.28.10's ff49c1889eba) answers 403 "This module version is not available". The pin
below is the oldest listed one: Istio's master of 2026-04-23 (VERSION 1.31, before 1.31.0-alpha.0).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .cache import build
from .gotools import go_binary, go_command, go_env, go_recipe

HELM = ("helm.sh/helm/v3/cmd/helm", "v3.22.0")
ISTIO_MODULE = "istio.io/istio"
ISTIO_VERSION = "v0.0.0-20260423205519-b01690e6db7d"
ISTIOCTL = (f"{ISTIO_MODULE}/istioctl/cmd/istioctl", ISTIO_VERSION)
# The CRDs of every Istio API (networking, security, telemetry, extensions), as Istio's base chart installs them.
ISTIO_CRDS = "manifests/charts/base/files/crd-all.gen.yaml"


def helm_binary() -> Path:
    """`helm` v3, `go install`ed once per recipe."""
    return go_binary(*HELM)


def _module_dir(module: str, version: str) -> Path:
    """`go mod download` of a module into Go's module cache; its (read-only) source folder."""
    done = subprocess.run([go_command(), "mod", "download", "-json", f"{module}@{version}"], env=go_env(),
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"go mod download {module}@{version} failed: {done.stdout}{done.stderr}")
    return Path(json.loads(done.stdout)["Dir"])


def istioctl_binary(timeout: float = 3600.0) -> Path:
    """`istioctl` built inside a copy of the pinned Istio source, as its own main module: its go.sum
    then vouches for every dependency (`go install istioctl@version` asks the checksum database
    instead, which does not know some of Istio's pre-release dependencies: 404). A large build
    (measured cold time: deploy/helm/uplion/README.md)."""
    package, version = ISTIOCTL
    recipe = go_recipe("istioctl", package=package, version=version, command="go build (Istio's own module)")

    def make(out: Path) -> None:
        src = _module_dir(ISTIO_MODULE, version)
        with tempfile.TemporaryDirectory(prefix="uplion-istioctl-") as tmp:
            work = Path(tmp) / "istio"
            shutil.copytree(src, work, ignore=shutil.ignore_patterns("*_test.go", "testdata"))
            for p in [work, *work.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            subprocess.run([go_command(), "build", "-trimpath", "-o", str(out / "istioctl"), "./istioctl/cmd/istioctl"],
                           cwd=work, env=go_env(), check=True, timeout=timeout)  # fmt: skip

    return build(recipe, make) / "istioctl"


def istio_source(version: str = ISTIO_VERSION) -> Path:
    """The files of the Istio module at `version` the tests use (its CRDs), copied from the module
    download into the cache."""
    recipe = go_recipe("istio-source", module=ISTIO_MODULE, version=version, files=ISTIO_CRDS)

    def make(out: Path) -> None:
        src = _module_dir(ISTIO_MODULE, version)
        dest = out / ISTIO_CRDS
        dest.parent.mkdir(parents=True)
        shutil.copyfile(src / ISTIO_CRDS, dest)

    return build(recipe, make)


def istio_crds() -> Path:
    return istio_source() / ISTIO_CRDS
