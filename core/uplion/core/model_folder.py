"""The local stack's models: a folder of AIModel manifests (`models/*.yaml`, one resource per file,
exactly what `kubectl apply -f` takes). The local runner starts workers from it, the gateway lists its
models and the admin API writes it; each reads it with `read_folder`, and `write_model`/`delete_model`
change it atomically (a reader never sees half a file)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .aimodels import API_VERSION, KIND, Manifest, manifest_problems, parse_manifests

SUFFIXES = (".yaml", ".yml")


@dataclass
class FolderModel:
    """One manifest file: its resource (None when it cannot be read) and what is wrong with it."""

    file: Path
    body: Manifest | None
    problems: list[str] = field(default_factory=list)
    mtime_ns: int = 0

    @property
    def valid(self) -> bool:
        return self.body is not None and not self.problems


def _read(path: Path) -> tuple[str, FolderModel]:
    stat = path.stat()
    try:
        docs = parse_manifests(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return path.stem, FolderModel(path, None, [f"{path.name} is not valid YAML: {e}"], stat.st_mtime_ns)
    if len(docs) != 1:
        return path.stem, FolderModel(path, None, [f"{path.name} must hold exactly one AIModel"], stat.st_mtime_ns)
    doc: Any = docs[0]
    problems = manifest_problems(doc)
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
    body = doc if isinstance(doc, dict) and isinstance(doc.get("spec"), dict) and name else None
    return str(name or path.stem), FolderModel(path, body, problems, stat.st_mtime_ns)


def read_folder(folder: Path) -> dict[str, FolderModel]:
    """Every manifest in `folder` by resource name (a file that cannot be read by its file name). A
    second resource of the same name, or a second resource serving a model already served, is
    refused as the API server and the operator would (files in name order decide who is first)."""
    out: dict[str, FolderModel] = {}
    serving: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".")):
        try:
            name, entry = _read(path)
        except FileNotFoundError:
            continue  # removed while listing
        if name in out:
            entry.problems.append(f"AIModel {name!r} is already defined in {out[name].file.name}")
            name = f"{name} ({path.name})"
        elif entry.valid and entry.body is not None:
            model = entry.body["spec"]["model"]
            if model in serving:
                entry.problems.append(
                    f"DuplicateModel: model {model!r} is already served by AIModel {serving[model]!r}"
                )
            else:
                serving[model] = name
        out[name] = entry
    return out


def folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """The manifests' names, modification times and sizes: equal signatures, equal contents (every
    write replaces the file), so a poller reads and parses only after a change."""
    if not folder.is_dir():
        return ()
    out = []
    for entry in os.scandir(folder):
        if entry.name.endswith(SUFFIXES) and not entry.name.startswith("."):
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                out.append((entry.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def manifest(name: str, spec: Manifest) -> Manifest:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def model_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.yaml"


def write_model(folder: Path, name: str, spec: Manifest, path: Path | None = None) -> Path:
    """Write (or replace) AIModel `name` as `path` (default `<name>.yaml`), atomically."""
    path = path or model_file(folder, name)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(manifest(name, spec), f, sort_keys=False)
    os.replace(tmp, path)
    return path


def delete_model(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
