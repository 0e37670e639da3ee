"""The web console end to end (issue #17): the README's run command starts the whole stack, then a
Playwright script (tests/web/e2e/, playwright-core through the build cache, Debian's Chromium) signs in
as the admin, creates a member, a key and an echo model from the form, waits for it to run, then as
the member streams a chat answer, stops a long one and finds the usage billed. Screenshots of every
page go to build/test-artifacts/console/. It also measures the models page with 500 models and the
usage page with a year of daily rows (synthetic API answers; printed, not asserted)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from uplion.devstack.node import check_node, link_project
from uplion.devstack.procs import free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
E2E = Path(__file__).resolve().parent / "e2e"
ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"
CHROMIUM = Path("/usr/bin/chromium")
MODEL = "e2e-echo"
# the pages every run visits, one screenshot each
PAGES = ("sign-in", "users", "user-detail", "keys", "models", "model-form", "prices", "usage", "audit", "chat")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (from its IHDR chunk); (0, 0) when it is none."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return 0, 0
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def console_server_url(logs: Path) -> str:
    """The console server's own address (the edge sends `/` to it): its log is console-<port>.log."""
    found = [m for p in logs.glob("console-*.log") if (m := re.fullmatch(r"console-(\d+)\.log", p.name))]
    assert len(found) == 1, f"expected one console-<port>.log in {logs}: {sorted(p.name for p in logs.iterdir())}"
    return f"http://127.0.0.1:{found[0].group(1)}/"


def run_script(project: Path, env: dict[str, str]) -> tuple[int, str]:
    out = subprocess.run(
        ["node", "console.e2e.mjs"],
        cwd=project,
        env={**os.environ, **env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out.returncode, out.stdout + out.stderr


def report(result: dict[str, Any]) -> None:
    print(f"screenshots: {ARTIFACTS}")
    for step in result.get("steps", []):
        print(f"  {'ok ' if step['ok'] else 'FAIL'} {step['ms']:>6} ms  {step['name']}")
    m = result.get("measurements", {})
    benchmarks = {
        "models500": "models page, 500 models: navigation to the table's last row",
        "usageFirstLoad": "usage page, first load: navigation to the table's last row",
        "usageYearDaily": "usage page, 1 year by day (365 rows): click to 365 bars + table",
    }
    for key, what in benchmarks.items():
        if key in m:
            v = m[key]
            print(f"benchmark: {what}: {v['renderMs']} ms; long tasks {v['longTasks']}, longest "
                  f"{v['longestTaskMs']} ms; longest frame gap {v['maxFrameGapMs']} ms")  # fmt: skip


def test_console_end_to_end(tmp_path: Path) -> None:
    check_node()  # Node.js 20+ and npm: fails saying what to install
    assert CHROMIUM.exists(), f"{CHROMIUM} is needed: apt-get install chromium (scripts/bootstrap.sh does)"
    project = link_project(E2E, tmp_path / "e2e")  # playwright-core through the build cache
    models = tmp_path / "models"  # the model the test creates lands here, not in the repository
    shutil.copytree(ROOT / "models", models)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)

    port, http_port = free_port(), free_port()
    stack_dir = tmp_path / "stack"
    argv = ["--dir", str(stack_dir), "--gateway-port", str(port), "--http-port", str(http_port), "--accounts-port", "0",
            "--models", str(models)]  # fmt: skip
    up = spawn("devstack", [sys.executable, "-m", "uplion.devstack", "up", *argv], tmp_path / "up.log", cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while "uplion is up" not in up.log_path.read_text() and time.monotonic() < deadline:
            assert up.alive(), up.log_tail()
            time.sleep(0.5)
        assert "uplion is up" in up.log_path.read_text(), up.log_tail()
        state = json.loads((stack_dir / "state.json").read_text())
        result_file = ARTIFACTS / "result.json"
        code, output = run_script(
            project,
            {
                "E2E_BASE": state["console"],
                "E2E_ADMIN": state["console_admin"],
                "E2E_CONSOLE_DIRECT": console_server_url(Path(state["logs"])),
                "E2E_ARTIFACTS": str(ARTIFACTS),
                "E2E_RESULT": str(result_file),
                "E2E_CHROMIUM": str(CHROMIUM),
                "E2E_MODEL": MODEL,
            },
        )
        print(output)
        assert result_file.exists(), f"the script wrote no result (exit {code}):\n{output[-4000:]}"
        result = json.loads(result_file.read_text())
        report(result)
        assert result["error"] is None, f"a step failed: {result['error']}\n(see the output above and {ARTIFACTS})"
        assert all(s["ok"] for s in result["steps"]), result["steps"]
        assert result["measurements"]["streamUpdates"] >= 2
        assert result["measurements"]["stoppedAtChars"] > 0
        assert result["measurements"]["memberRequests"] > 0
        assert (models / f"{MODEL}.yaml").exists() or any(MODEL in p.read_text() for p in models.glob("*.yaml"))
        for name in PAGES:
            data = (ARTIFACTS / f"{name}.png").read_bytes()
            width, height = png_size(data)
            assert width >= 1000, f"{name}.png: {width}x{height}"
            assert height >= 600, f"{name}.png: {width}x{height}"
            assert len(data) > 5000, f"{name}.png: only {len(data)} bytes"
        # last: the console and edge bugs the script found (it worked around them to run every step)
        assert result["findings"] == [], "bugs found:\n- " + "\n- ".join(result["findings"])
        assert code == 0, output[-4000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died already: keep the first error
            os.killpg(up.pid, signal.SIGINT)
        up.popen.wait(90)
