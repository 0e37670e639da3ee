"""Which file answers a request path: a built file, index.html (client routes), or nothing (404)."""

from __future__ import annotations

import enum
import mimetypes
import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote

INDEX = "index.html"
# Paths the edge routes to the APIs: if one reaches the console, answering index.html would hide a
# routing mistake behind a 200 page, so they get a 404 JSON error instead.
API_PREFIXES = ("/admin/", "/v1/")

TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain",
    ".map": "application/json",
}


class Kind(enum.Enum):
    FILE = "file"
    INDEX = "index"  # a client-side route: the app's index.html
    NOT_FOUND = "not_found"  # a missing file (has an extension or lives under assets/), or a bad path
    API = "api"  # an API path that should never reach the console


@dataclass(frozen=True)
class Choice:
    kind: Kind
    rel_path: str = ""  # the file, relative to the assets folder, for FILE and INDEX


def content_type(rel_path: str) -> str:
    suffix = PurePosixPath(rel_path).suffix.lower()
    found = TYPES.get(suffix) or mimetypes.guess_type(rel_path)[0] or "application/octet-stream"
    if found.startswith("text/") or found in ("application/javascript", "application/json", "image/svg+xml"):
        return f"{found}; charset=utf-8"
    return found


def normalize(raw_path: str) -> str | None:
    """The request path as a safe relative path ("" for the root), or None when it tries to leave
    the folder (`..`), holds NUL or a backslash, or is otherwise malformed."""
    path = unquote(raw_path.split("?", 1)[0])
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    rel = posixpath.join(*parts) if parts else ""
    if any(p.startswith(".") for p in parts):  # dotfiles (.gz siblings are served by content negotiation)
        return None
    return rel


def choose(raw_path: str, files: frozenset[str] | set[str]) -> Choice:
    """What answers `raw_path`, given the relative paths of the built files."""
    path = raw_path.split("?", 1)[0]
    if path in ("/v1", "/admin") or path.startswith(API_PREFIXES):
        return Choice(Kind.API)
    rel = normalize(raw_path)
    if rel is None:
        return Choice(Kind.NOT_FOUND)
    if rel == "" or rel == INDEX:
        return Choice(Kind.INDEX, INDEX)
    if rel in files and not rel.endswith(".gz"):
        return Choice(Kind.FILE, rel)
    last = rel.rsplit("/", 1)[-1]
    if rel.startswith("assets/") or "." in last:
        return Choice(Kind.NOT_FOUND)
    return Choice(Kind.INDEX, INDEX)
