"""The build cache under `~/.cache/uplion` (or `$UPLION_CACHE`): every artifact the tests and the
local stack fetch or build (Apache Pulsar's jars, Go-built binaries, Node packages, ...) lives in a
folder named for a hash of the recipe that made it, is built in a temporary folder beside it and
renamed into place only when complete. A changed recipe is a new folder (rebuilt); an interrupted
build leaves only a temporary folder, never a finished-looking one.

Every use stamps the folder (`.used`); `prune` (run by `python -m uplion.devstack.prebuild`) removes
the folders a changed recipe left behind: per recipe name the three used last are kept, and any
other used within the last six hours (one test run uses several variants of a name, such as the
three images' build contexts)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

RECIPE_FILE = ".recipe"
USED_FILE = ".used"
KEEP_PER_NAME = 3
IDLE_S = 6 * 3600


def cache_root() -> Path:
    return Path(os.environ.get("UPLION_CACHE") or Path.home() / ".cache" / "uplion")


@dataclass(frozen=True)
class Recipe:
    """What makes an artifact: a name, and every input whose change must rebuild it (file contents,
    module versions, build flags, toolchain versions). Its key is a hash of all of them."""

    name: str
    inputs: Mapping[str, str | bytes] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"name: {self.name}"]
        for k in sorted(self.inputs):
            v = self.inputs[k]
            shown = f"sha256:{hashlib.sha256(v).hexdigest()}" if isinstance(v, bytes) else v
            lines.append(f"{k}: {shown}")
        return "\n".join(lines) + "\n"

    @property
    def key(self) -> str:
        return hashlib.sha256(self.text().encode()).hexdigest()[:16]

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.key}"


def artifact_dir(recipe: Recipe) -> Path:
    return cache_root() / recipe.folder


def is_built(recipe: Recipe) -> bool:
    return (artifact_dir(recipe) / RECIPE_FILE).is_file()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(recipe: Recipe, make: Callable[[Path], None]) -> Path:
    """The artifact folder for `recipe`, made by `make(tmp)` into a temporary folder first if it is
    not in the cache yet. Concurrent callers (a test run beside `run.sh`) wait for one build."""
    final = artifact_dir(recipe)
    if is_built(recipe):
        _mark_used(final)
        return final
    root = cache_root()
    with _lock(root / f".{recipe.folder}.lock"):
        if is_built(recipe):
            _mark_used(final)
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{recipe.folder}.", suffix=".partial", dir=root))
        try:
            make(tmp)
            (tmp / RECIPE_FILE).write_text(recipe.text())
            if final.exists():  # a leftover without its recipe file: never complete, replace it
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _mark_used(final)
    return final


def _mark_used(folder: Path) -> None:
    (folder / USED_FILE).touch()


@dataclass(frozen=True)
class Entry:
    folder: Path
    name: str  # the recipe's name
    last_used: float  # epoch seconds


def superseded(entries: list[Entry], now: float, keep: int = KEEP_PER_NAME, idle_s: float = IDLE_S) -> list[Entry]:
    """The entries to remove (pure): beyond the `keep` used last of their name, those idle longer
    than `idle_s`."""
    by_name: dict[str, list[Entry]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e)
    out = []
    for same in by_name.values():
        same.sort(key=lambda e: e.last_used, reverse=True)
        out += [e for e in same[keep:] if now - e.last_used > idle_s]
    return out


def cache_entries(root: Path | None = None) -> list[Entry]:
    """The finished artifact folders (those with a recipe file) and when each was last used."""
    root = root or cache_root()
    out = []
    for recipe_file in root.glob(f"*/{RECIPE_FILE}"):
        folder = recipe_file.parent
        first = recipe_file.read_text().split("\n", 1)[0]
        if not first.startswith("name: "):
            continue
        used = folder / USED_FILE
        stamp = used if used.exists() else recipe_file
        out.append(Entry(folder, first.removeprefix("name: "), stamp.stat().st_mtime))
    return out


def prune(root: Path | None = None, now: float | None = None) -> list[tuple[Path, int]]:
    """Remove superseded artifact folders; (folder, bytes freed) of each."""
    removed = []
    for e in superseded(cache_entries(root), time.time() if now is None else now):
        size = sum(f.stat().st_size for f in e.folder.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(e.folder, ignore_errors=True)
        removed.append((e.folder, size))
    return removed


def _version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"{cmd[0]} is needed on PATH: {e}") from e
    return (out.stdout + out.stderr).strip().splitlines()[0]


@cache
def tool_version(tool: str) -> str:
    """The first line a toolchain prints of its version (part of recipes it builds with)."""
    flags = {"java": ["-version"], "go": ["version"], "node": ["--version"], "npm": ["--version"]}
    return _version_of([tool, *flags.get(tool, ["--version"])])
