"""The web console in the local stack: its production build (web/, `vite build`) made once per recipe
(the app's sources, its lock file, Node's and npm's versions) into the build cache, and the console
server (`python -m uplion.console`) serving it behind the edge at `/`."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from .cache import Recipe, build, tool_version
from .node import link_tree
from .platform import Service, start_python_service
from .procs import free_port

WEB = Path(__file__).resolve().parents[3] / "web"
# not inputs of `vite build`: installed packages, earlier builds, the server's Python package
NOT_SOURCES = ("node_modules", "dist", "uplion")


def _sources_digest(web: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(web.rglob("*")):
        rel = path.relative_to(web)
        if path.is_file() and not any(part in NOT_SOURCES for part in rel.parts):
            digest.update(rel.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def console_recipe(web: Path = WEB) -> Recipe:
    return Recipe("console-build", {"sources": _sources_digest(web), "node": tool_version("node"),
                                    "npm": tool_version("npm"), "command": "vite build"})  # fmt: skip


def console_assets(web: Path = WEB, timeout: float = 600.0) -> Path:
    """The built console (index.html and assets/), from the cache when its recipe is unchanged."""

    def make(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="uplion-console-") as tmp:
            project = link_tree(web, Path(tmp) / "web", skip=NOT_SOURCES, timeout=timeout)
            subprocess.run(["npx", "--no-install", "vite", "build", "--outDir", str(out / "dist"), "--emptyOutDir"],
                           cwd=project, check=True, capture_output=True, timeout=timeout)  # fmt: skip

    return build(console_recipe(web), make) / "dist"


def start_console(workdir: Path, assets: Path, port: int = 0) -> Service:
    return start_python_service(workdir, "console", "UPLION_CONSOLE_LISTEN", port, UPLION_CONSOLE_ASSETS=str(assets),
                                UPLION_CONSOLE_GRPC_LISTEN=f"127.0.0.1:{free_port()}")  # fmt: skip
