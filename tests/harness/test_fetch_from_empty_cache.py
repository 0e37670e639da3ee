"""Every cheap fetch step runs from an empty build cache (UPLION_CACHE pointed at a new folder), so a
broken recipe fails the suite even on a machine whose cache is warm. The download caches of the
package managers (~/.m2, the Go module cache, npm's cache) stay warm: these steps take seconds.
The slow build (Kubernetes) is covered by tests/unit/test_cache.py: its key follows its recipe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from uplion.devstack import gotools, node, pulsar
from uplion.devstack.cache import RECIPE_FILE, cache_root, tool_version

NODE_SUITE = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("UPLION_CACHE", str(root))
    monkeypatch.delenv("UPLION_RATELIMIT_BINARY", raising=False)
    assert cache_root() == root
    assert not root.exists()
    return root


def _only_finished_artifacts(root: Path) -> list[str]:
    """The cache holds finished artifact folders (with their recipe) and lock files, no leftovers."""
    names = sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))
    for name in names:
        assert (root / name / RECIPE_FILE).is_file(), f"{name} has no recipe file: an unfinished build"
    return names


def test_pulsar_assembles_into_an_empty_cache_and_the_broker_starts(empty_cache: Path, tmp_path: Path) -> None:
    broker = pulsar.start_pulsar(tmp_path / "broker")
    try:
        assert broker.admin_text("/admin/v2/brokers/version") == pulsar.PULSAR_VERSION
        lib = pulsar.ensure_jars()
        assert lib.is_relative_to(empty_cache)
        assert any(j.name.startswith("pulsar-broker-") for j in lib.iterdir())
    finally:
        broker.stop()
    assert _only_finished_artifacts(empty_cache) == [pulsar.pulsar_recipe().folder]


def test_go_tools_build_into_an_empty_cache(empty_cache: Path) -> None:
    rls = gotools.ratelimit_binary()
    reference = gotools.reference_ratelimit()
    grpcurl = gotools.grpcurl()
    vegeta = gotools.vegeta()
    for binary in (rls, reference, grpcurl, vegeta):
        assert binary.is_relative_to(empty_cache)
    # the binary runs: without its one required setting it says which is missing
    out = subprocess.run([str(rls)], capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "UPLION_REDIS_URL is required" in out.stderr
    # grpcurl is the pinned module's (go install sets no -version string: the build info says it)
    info = subprocess.run([gotools.go_command(), "version", "-m", str(grpcurl)], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert f"mod\tgithub.com/fullstorydev/grpcurl\t{gotools.GRPCURL[1]}" in info.stdout, info.stdout
    assert subprocess.run([str(vegeta), "-version"], capture_output=True, text=True, timeout=30).returncode == 0
    assert set(_only_finished_artifacts(empty_cache)) == {
        gotools.ratelimit_recipe().folder,
        reference.parent.name,
        grpcurl.parent.name,
        vegeta.parent.name,
    }


def test_node_packages_install_into_an_empty_cache(empty_cache: Path, tmp_path: Path) -> None:
    suite = node.link_project(NODE_SUITE, tmp_path / "suite")
    assert (suite / "node_modules").resolve().is_relative_to(empty_cache)
    out = subprocess.run(["node", "-e", "import('openai').then(m => console.log(typeof m.default))"], cwd=suite,
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "function"
    assert _only_finished_artifacts(empty_cache) == [node.node_recipe(NODE_SUITE).folder]


def test_node_runtime_fetches_into_an_empty_cache(empty_cache: Path) -> None:
    """Node.js 22 for the AI SDK suite (prebuild's step, tests/edge/test_node_sdk.py): fetched with
    `npm pack` (~51 MB), integrity checked, cached. Where the `node` on PATH is 22+ already, that one
    is the answer and nothing is fetched."""
    binary = node.node_binary(22)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60,
                             check=True).stdout.strip()  # fmt: skip
    on_path = node._major(tool_version("node"))
    if on_path >= 22:
        assert version == tool_version("node")
        assert not binary.is_relative_to(empty_cache)
        assert not empty_cache.exists() or _only_finished_artifacts(empty_cache) == []
        return
    assert version == f"v{node.NODE_RUNTIME}"
    assert binary.is_relative_to(empty_cache)
    folder = binary.parents[1].name
    assert folder in {node.node_runtime_recipe(arch).folder for arch in node.NODE_RUNTIME_INTEGRITY}
    assert _only_finished_artifacts(empty_cache) == [folder]
    # a second call is the cache lookup: the same file, not written again
    before = binary.stat()
    assert node.node_binary(22) == binary
    assert (binary.stat().st_ino, binary.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
