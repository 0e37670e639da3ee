"""Node.js packages for the suites that run on Node (the official openai Node SDK, the web console):
`npm ci` of a package.json and its lock file into the build cache, keyed by both and by the Node and
npm versions, then linked beside the scripts that import them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .cache import Recipe, build, tool_version

NODE_MIN = (20, 19)  # Vite 7 (the web console) needs 20.19


def check_node() -> None:
    """Fail with what to install when node/npm are missing or too old."""
    need = ".".join(map(str, NODE_MIN))
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError(f"the Node suites need Node.js {need}+ and npm on PATH (apt-get install nodejs npm)")
    m = re.match(r"v(\d+)\.(\d+)", tool_version("node"))
    if not m or (int(m.group(1)), int(m.group(2))) < NODE_MIN:
        raise RuntimeError(f"the Node suites need Node.js {need}+, found {tool_version('node')}")


def node_recipe(project: Path) -> Recipe:
    return Recipe(
        f"node-{project.name}",
        {
            "package.json": (project / "package.json").read_bytes(),
            "package-lock.json": (project / "package-lock.json").read_bytes(),
            "node": tool_version("node"),
            "npm": tool_version("npm"),
            "command": "npm ci --no-audit --no-fund",
        },
    )


def node_modules(project: Path, timeout: float = 600.0) -> Path:
    """The installed node_modules folder for `project` (which holds package.json and package-lock.json)."""
    check_node()

    def make(out: Path) -> None:
        for f in ("package.json", "package-lock.json"):
            shutil.copy(project / f, out / f)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=out, check=True, timeout=timeout)

    return build(node_recipe(project), make) / "node_modules"


def link_project(project: Path, into: Path, timeout: float = 600.0) -> Path:
    """A copy of `project`'s files in `into` beside a link to its cached node_modules, ready to run."""
    into.mkdir(parents=True, exist_ok=True)
    for f in project.iterdir():
        if f.is_file():
            shutil.copy(f, into / f.name)
    link = into / "node_modules"
    if not link.exists():
        link.symlink_to(node_modules(project, timeout))
    return into


def link_tree(project: Path, into: Path, skip: tuple[str, ...] = (), timeout: float = 600.0) -> Path:
    """A copy of `project`'s whole tree (a web app's src/ and public/ too) in `into`, without
    node_modules and the names in `skip` (glob patterns), beside a link to its cached node_modules."""
    shutil.copytree(
        project, into, ignore=shutil.ignore_patterns("node_modules", *skip), symlinks=True, dirs_exist_ok=True
    )
    link = into / "node_modules"
    if not link.exists():
        link.symlink_to(node_modules(project, timeout))
    return into
