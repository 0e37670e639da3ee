"""The build cache: keys follow recipes, builds land whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from uplion.devstack import kube
from uplion.devstack.cache import RECIPE_FILE, Recipe, artifact_dir, build, is_built


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UPLION_CACHE", str(tmp_path))
    return tmp_path


def test_the_key_changes_with_every_input_and_not_with_their_order() -> None:
    base = Recipe("tool", {"version": "1", "pom.xml": b"<a/>"})
    assert Recipe("tool", {"pom.xml": b"<a/>", "version": "1"}).key == base.key
    assert Recipe("tool", {"version": "2", "pom.xml": b"<a/>"}).key != base.key
    assert Recipe("tool", {"version": "1", "pom.xml": b"<b/>"}).key != base.key
    assert Recipe("tool", {"version": "1", "pom.xml": b"<a/>", "go": "go1.26"}).key != base.key
    assert Recipe("other", dict(base.inputs)).key != base.key
    assert base.folder == f"tool-{base.key}"


def test_a_finished_build_is_reused_and_a_new_recipe_rebuilds() -> None:
    calls: list[Path] = []

    def make(out: Path) -> None:
        calls.append(out)
        (out / "bin").write_text("built")

    first = build(Recipe("tool", {"v": "1"}), make)
    assert build(Recipe("tool", {"v": "1"}), make) == first
    assert len(calls) == 1
    assert (first / "bin").read_text() == "built"
    assert "v: 1" in (first / RECIPE_FILE).read_text()
    second = build(Recipe("tool", {"v": "2"}), make)
    assert second != first
    assert len(calls) == 2
    assert calls[0].parent == first.parent
    assert calls[0] != first


def test_an_interrupted_build_is_never_taken_for_a_finished_one(cache: Path) -> None:
    recipe = Recipe("tool", {"v": "1"})

    def fail(out: Path) -> None:
        (out / "bin").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(recipe, fail)
    assert not artifact_dir(recipe).exists()
    assert not is_built(recipe)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    # a folder left by an older cache layout (no recipe file) is not complete either: rebuilt
    artifact_dir(recipe).mkdir()
    (artifact_dir(recipe) / "bin").write_text("stale")

    def fresh(out: Path) -> None:
        (out / "bin").write_text("fresh")

    built = build(recipe, fresh)
    assert (built / "bin").read_text() == "fresh"


def test_the_kubernetes_build_key_follows_its_version_and_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "go_recipe", lambda name, **i: Recipe(name, {"go": "go1.26.8 linux amd64", **i}))
    base = kube.kubernetes_recipe("1.35.4")
    assert kube.kubernetes_recipe("1.35.4") == base
    assert kube.kubernetes_recipe("1.35.5").key != base.key
    monkeypatch.setattr(kube, "COMPONENTS", ("kube-apiserver",))
    assert kube.kubernetes_recipe("1.35.4").key != base.key
    monkeypatch.setattr(kube, "_BUILD_MOD", kube._BUILD_MOD.replace("go 1.25.0", "go 1.26.0"))
    assert kube.kubernetes_recipe("1.35.4").key != base.key


def write_blob(out: Path) -> None:
    (out / "blob").write_bytes(b"x" * 10)


def test_prune_keeps_the_three_used_last_per_name_and_whatever_was_used_recently(cache: Path) -> None:
    import os
    import time

    from uplion.devstack.cache import USED_FILE, cache_entries, prune

    now = time.time()
    ages_h = {"ctx": [0, 1, 2, 3, 30, 50], "tool": [100]}  # hours since each folder's last use
    for name, ages in ages_h.items():
        for i, age in enumerate(ages):
            folder = build(Recipe(name, {"i": str(i)}), write_blob)
            os.utime(folder / USED_FILE, (now - age * 3600, now - age * 3600))
    removed = prune(now=now)
    # ctx: the three used last are kept, and the fourth too (used within six hours); the two idle for
    # over a day go. tool: its only folder stays however old
    assert sorted(int(e.last_used) for e in cache_entries()) == sorted(int(now - h * 3600) for h in (0, 1, 2, 3, 100))
    assert len(removed) == 2
    assert all(size >= 10 for _, size in removed)
    assert not any(folder.exists() for folder, _ in removed)


def test_every_use_stamps_the_folder(cache: Path) -> None:
    import os

    from uplion.devstack.cache import USED_FILE

    recipe = Recipe("stamped", {"v": "1"})
    folder = build(recipe, lambda out: None)
    os.utime(folder / USED_FILE, (1, 1))
    build(recipe, lambda out: None)
    assert (folder / USED_FILE).stat().st_mtime > 1
