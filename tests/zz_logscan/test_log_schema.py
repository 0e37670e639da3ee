"""Runs last: every log line uplion's services wrote during this test session follows one schema
(tests/security/logschema.py), the Go rate limiter's included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.logschema import file_problems, line_problem, service_logs


def test_every_service_log_line_follows_one_schema(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    logs = list(service_logs([run_dir, tmp_path_factory.getbasetemp()]))
    assert logs, "no service log found: the scan would prove nothing"
    problems = [p for path in logs for p in file_problems(path, path.read_text(errors="replace").splitlines())]
    assert problems == [], f"{len(problems)} line(s) off the schema in {len(logs)} files:\n" + "\n".join(
        map(str, problems[:40])
    )


def test_the_schema_check_itself() -> None:
    ok = '{"ts": "2026-11-30T16:52:38.751Z", "level": "warning", "service": "ratelimit", "logger": "x", "msg": "m"}'
    assert line_problem(ok) is None
    assert line_problem(ok.replace('"warning"', '"WARN"')) == "level 'WARN'"
    assert line_problem('{"time": "x", "level": "info", "msg": "m"}') == "missing ts, service, logger"
    pulsar = "2026-11-30 18:12:50.491 WARN  [140674499225280] ProducerImpl:881 | [persistent://public/default/x] slow"
    lines = ["uplion worker w1 serving model 'echo' (echo)", pulsar, "Traceback (most",
             "terminate called without an active exception"]  # fmt: skip
    assert [p.line for p in file_problems(Path("w.log"), lines)] == [3, 4]
