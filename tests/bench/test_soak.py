"""`scripts/bench.sh soak` end to end at a tiny duration (0.3 min at half the maximum its short ramp
measures): the whole production path starts, the table parses, every process of the stack has its
row, the JSON, CSV and PNG are written and agree, no request failed and billing equals the answered
requests. The latency and memory goals are only parsed (PASS or FAIL): no timing asserts."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_ROW = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<base>\d+\.\d)\s+(?P<end>\d+\.\d)\s+(?P<growth>[+-]\d+\.\d)\s+(?P<pss>\d+\.\d)"
    r"\s+(?P<cpu>\d+\.\d)\s+(?P<result>PASS|FAIL|info)$"
)
GOALS = ("error rate 0", "p99 stable", "RSS growth", "billing = answered", "every service alive")
PROCESSES = {"pulsar", "postgres", "redis", "gateway", "accounts", "authz", "ratelimit", "ratelimit settler",
             "console", "envoy (edge)", "billing", "worker bench-chat"}  # fmt: skip


def test_soak_runs_and_reports(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench.soak", "--minutes", "0.3", "--interval", "2", "--ramp-seconds", "2",
            "--out", str(tmp_path)]  # fmt: skip
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=540)
    out = run.stdout
    assert "== soak:" in out, f"no table (exit {run.returncode}):\n{out[-3000:]}\n{run.stderr[-3000:]}"
    table = out[out.index("== soak:") :].split("\nwritten: ")[0]
    lines = table.splitlines()

    rows = {m["name"]: m for m in map(SERVICE_ROW.match, lines) if m}
    assert set(rows) == PROCESSES, lines
    # uplion's processes are judged; Pulsar, PostgreSQL and Redis are shown, not judged
    assert {n for n, m in rows.items() if m["result"] == "info"} == {"pulsar", "postgres", "redis"}
    for m in rows.values():
        assert float(m["base"]) > 0, m.string
        assert float(m["end"]) > 0, m.string
        growth = 100 * (float(m["end"]) - float(m["base"])) / float(m["base"])
        # the printed growth is the printed sizes' growth (within their rounding to 0.1 MB)
        assert abs(growth - float(m["growth"])) <= 10 / float(m["base"]) + 0.1, m.string

    results = {}
    for goal in GOALS:
        line = next((ln for ln in lines if ln.startswith(goal)), None)
        assert line is not None, (goal, lines)
        assert line.rsplit(maxsplit=1)[-1] in ("PASS", "FAIL"), line
        results[goal] = line.rsplit(maxsplit=1)[-1]
    # correctness, not timing: every request answered with the fake's answer, billed exactly once
    assert results["error rate 0"] == "PASS", table
    assert results["billing = answered"] == "PASS", table
    assert results["every service alive"] == "PASS", table
    overall = lines[-1]
    assert overall in ("overall: PASS", "overall: FAIL")
    assert run.returncode == (0 if overall.endswith("PASS") else 1), run.stderr[-3000:]

    stems = {p.stem for p in tmp_path.iterdir()}
    assert len(stems) == 1, stems
    stem = tmp_path / stems.pop()
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["table"] == table
    assert report["goals"]["errors"]["errors"] == 0
    assert report["goals"]["billing"]["answered"] == report["goals"]["billing"]["billed_completed"] > 0
    assert [r["concurrency"] for r in report["ramp"]] == [16, 32, 64]
    assert report["settings"]["rate"] == max(r["rps"] for r in report["ramp"]) / 2
    samples = report["samples"]
    assert len(samples) >= 6  # 18 s at one sample every 2 s
    assert sum(s["requests"] for s in samples) == report["goals"]["errors"]["requests"]
    assert all(set(s["rss_mb"]) == PROCESSES for s in samples)
    with stem.with_suffix(".csv").open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(samples)
    assert [int(r["requests"]) for r in csv_rows] == [s["requests"] for s in samples]
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
