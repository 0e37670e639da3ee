"""The console's own suite and build, run from pytest: `npm ci` through the build cache
(uplion.devstack.node), the TypeScript check, `vitest run`, then the production build, whose JavaScript
loaded by index.html must stay under the gzip budget; the console server then serves that build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from uplion.console.assets import AssetStore
from uplion.devstack.node import check_node, link_tree
from uplion.devstack.procs import free_port, spawn, wait_until

from .conftest import WEB
from .test_console_server import Console, assert_security_headers, get

BUDGET_BYTES = 300 * 1024  # gzip-compressed JavaScript of the first load
SKIP = ("dist", "uplion", "__pycache__", "README.md", ".gitignore")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    check_node()  # Node.js 20+ and npm are a prerequisite: fails saying what to install
    return link_tree(WEB, tmp_path_factory.mktemp("web") / "web", SKIP)


def run(project: Path, *argv: str, timeout: float = 300) -> str:
    out = subprocess.run(
        [str(project / "node_modules" / ".bin" / argv[0]), *argv[1:]],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CI": "true", "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )
    text = out.stdout + out.stderr
    print(text)
    assert out.returncode == 0, f"{' '.join(argv)} failed ({out.returncode}):\n{text}"
    return text


def test_typescript(project: Path) -> None:
    run(project, "tsc", "--noEmit")


def test_vitest(project: Path) -> None:
    text = run(project, "vitest", "run")
    m = re.search(r"Tests\s+(\d+) passed \((\d+)\)", text)
    assert m, text
    assert m.group(1) == m.group(2), text  # every test ran and passed: none skipped or todo
    assert int(m.group(1)) >= 40, text


@pytest.fixture(scope="module")
def dist(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "dist"
    run(project, "vite", "build", "--outDir", str(out), "--emptyOutDir")
    return out


def entry_scripts(index_html: str) -> list[str]:
    """The JS files index.html loads at once: module scripts and modulepreloads."""
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', index_html)
    preloads = re.findall(r'<link[^>]*rel="modulepreload"[^>]*href="([^"]+)"', index_html)
    return [s.lstrip("/") for s in scripts + preloads]


def test_first_load_budget(dist: Path) -> None:
    index = (dist / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index), "inline scripts break the CSP"
    assert not re.search(r'(src|href)="(https?:)?//', index), "everything must be bundled (no CDN)"
    store = AssetStore(dist, 64 << 20)  # the bytes the console server sends (gzip level 9)
    first = entry_scripts(index)
    assert first, index
    sizes = {name: len(store.assets[name].gzipped or store.assets[name].read()) for name in first}
    total = sum(sizes.values())
    all_js = sum(len(a.gzipped or a.read()) for a in store.assets.values() if a.rel_path.endswith(".js"))
    print(f"first-load JS, gzip: {total} bytes ({total / 1024:.1f} KiB) in {sizes}")
    print(f"all JS chunks (every page loaded), gzip: {all_js} bytes ({all_js / 1024:.1f} KiB)")
    assert total < BUDGET_BYTES, f"first-load JS is {total} gzip bytes, over the {BUDGET_BYTES} budget"


@pytest.fixture(scope="module")
def served(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("served")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WEB), os.environ.get("PYTHONPATH", "")]),
        "UPLION_CONSOLE_ASSETS": str(dist),
        "UPLION_CONSOLE_LISTEN": f"127.0.0.1:{port}",
        "UPLION_CONSOLE_GRPC_LISTEN": "",
    }
    proc = spawn("console", [sys.executable, "-m", "uplion.console"], tmp / "console.log", env=env)
    wait_until(proc, lambda: "listening on port" in proc.log_tail(), timeout=30)
    yield Console(proc, f"http://127.0.0.1:{port}", 0, 0, dist)
    proc.stop()


def test_server_serves_the_build(served: Console) -> None:
    index = get(served.base + "/usage")
    assert index.status == 200
    assert_security_headers(index)
    for name in entry_scripts(index.body.decode()):
        js = get(f"{served.base}/{name}", {"Accept-Encoding": "gzip"})
        assert js.status == 200
        assert js.headers["content-encoding"] == "gzip"
        assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    css = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="/([^"]+)"', index.body.decode())
    assert css
    assert get(f"{served.base}/{css[0]}").headers["content-type"] == "text/css; charset=utf-8"


def test_app_runs_under_the_csp_in_chromium(served: Console, tmp_path: Path) -> None:
    """A real browser loads the served build with its Content-Security-Policy and renders the sign-in
    form: the bundle needs no inline script, eval or other origin."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is needed for this test: apt-get install chromium (scripts/bootstrap.sh does)"
    out = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"{served.base}/chat",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-testid="login-form"' in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Content Security Policy" not in out.stderr, out.stderr[-3000:]
