"""Runs last (pytest collects `tests/` in name order): no log line any service of this test session
wrote (everything under the session's run dir and pytest's temporary directories) holds an API key,
a session token or a password the tests use. A finding fails the run; it names the file, the line
and the kind of secret, never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.logscan import scan, suite_passwords

TESTS = Path(__file__).resolve().parents[1]


def test_no_log_line_holds_a_key_a_session_token_or_a_password(
    run_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    passwords = suite_passwords(TESTS)
    assert "root-password-correct" in passwords  # the security suite's admin password is among them
    findings, files = scan([run_dir, tmp_path_factory.getbasetemp()], passwords)
    assert findings == [], f"secrets in {len(findings)} log line(s) of {files} log files:\n" + "\n".join(
        map(str, findings)
    )
