"""The built files, read once at start: bytes, a gzip copy for compressible types (a precompressed
`<file>.gz` from the build is used when present), an ETag. Larger files stay on disk."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .files import content_type
from .headers import compressible

MIN_GZIP_BYTES = 256  # smaller bodies grow or barely shrink


@dataclass(frozen=True)
class Asset:
    rel_path: str
    content_type: str
    etag: str
    size: int
    body: bytes | None  # None: larger than the memory limit, read from `path` per request
    gzipped: bytes | None
    path: Path

    def read(self) -> bytes:
        return self.body if self.body is not None else self.path.read_bytes()


def load_asset(root: Path, path: Path, max_cached: int) -> Asset:
    rel = path.relative_to(root).as_posix()
    ctype = content_type(rel)
    size = path.stat().st_size
    digest = hashlib.sha256()
    body: bytes | None = None
    gz: bytes | None = None
    if size <= max_cached:
        body = path.read_bytes()
        digest.update(body)
        if compressible(ctype) and size >= MIN_GZIP_BYTES:
            pre = path.with_name(path.name + ".gz")
            gz = pre.read_bytes() if pre.is_file() else gzip.compress(body, compresslevel=9, mtime=0)
            if len(gz) >= size:
                gz = None
    else:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return Asset(rel, ctype, f'"{digest.hexdigest()[:32]}"', size, body, gz, path)


class AssetStore:
    """Every file under `root` (dotfiles and `.gz` siblings excluded), by relative path."""

    def __init__(self, root: Path, max_cached: int) -> None:
        self.root = root
        self.assets: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or rel.endswith(".gz") or any(p.startswith(".") for p in rel.split("/")):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                continue  # never serve a file outside the folder
            self.assets[rel] = load_asset(root, path, max_cached)
        self.names = frozenset(self.assets)

    @property
    def total_bytes(self) -> int:
        return sum(a.size for a in self.assets.values())
