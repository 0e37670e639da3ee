"""The log scan's rules (tests/security/logscan.py), on planted files: what counts as a secret, which
files are logs, where the tests' passwords come from, and that a finding is reported without the
secret."""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePath

from uplion.accounts.security import issue_session
from uplion.core.credentials import new_secret, visible_prefix

from .logscan import is_log_file, passwords_in, scan, secrets_in_line


def test_keys_session_tokens_and_passwords_are_found_but_shown_prefixes_are_not() -> None:
    key = new_secret()
    session, _ = issue_session("s" * 48, "u_1", "ses_1", 3600)
    passwords = {"hunter2-hunter2"}
    assert secrets_in_line(f'{{"msg": "key {key} refused"}}', passwords) == ["API key"]
    assert secrets_in_line(f"authorization: Bearer {session}", passwords) == ["session token"]
    assert secrets_in_line("login with hunter2-hunter2 failed", passwords) == ["password used by the tests"]
    # what logs may say: a key's visible prefix, its masked form, ids, words
    for fine in (f"token {visible_prefix(key)} disabled", "Incorrect API key provided: upl-abcd****.",
                 "tok_0123456789abcdef", "reason wrong_password", "upl-" + "x" * 39):  # fmt: skip
        assert secrets_in_line(fine, passwords) == [], fine


def test_log_files_are_the_services_logs_not_their_data() -> None:
    for log in ("security/authz-4311.log", "security/envoy-1/envoy.log", "postgres/postgres.log",
                "pulsar/pulsar.log", "pulsar/rocksdb-log/tmp_x_metadata_LOG", "pulsar/logs/broker.log.1"):  # fmt: skip
        assert is_log_file(PurePath(log)), log
    for data in ("postgres/pgdata/base/1/1259", "postgres/pgdata/pg_logical/replorigin_checkpoint",
                 "redis/dump.rdb", "security/envoy-1/envoy.yaml", "pulsar/standalone.conf"):  # fmt: skip
        assert not is_log_file(PurePath(data)), data


def test_passwords_are_collected_from_the_test_sources() -> None:
    source = """
ADMIN_PASSWORD = "admin-password-1"
def member(password: str = "default-password") -> None: ...
def f(c, make):
    old, new = "first-secret-pw", "second-secret-pw"
    make(email="a@b", password=old)
    c.post("/login", json={"email": "a@b", "password": new, "current_password": "third-secret-pw"})
    c.post("/login", json={"password": "short"})
    other = "not-a-password-at-all"
"""
    assert passwords_in(source) == {"admin-password-1", "default-password", "first-secret-pw", "second-secret-pw",
                                    "third-secret-pw"}  # fmt: skip


def test_a_planted_secret_fails_the_scan_naming_file_line_and_kind_only() -> None:
    key = new_secret()
    # outside pytest's temporary directories, which tests/zz_logscan scans for real
    with tempfile.TemporaryDirectory(prefix="uplion-logscan-") as d:
        root = Path(d)
        (root / "security").mkdir()
        (root / "security" / "authz-1.log").write_text(f"ok\nrefused {key}\n")
        (root / "security" / "gateway-1.log").write_text("nothing here\n")
        (root / "pgdata").mkdir()
        (root / "pgdata" / "16384").write_text(key)  # a data file: not a log
        (root / "test_run_command_serves_0").mkdir()
        (root / "test_run_command_serves_0" / "up.log").write_text(f"OPENAI_API_KEY={key}\n")  # the terminal
        findings, files = scan([root], {"member-password-1"})
    assert files == 2
    assert [(Path(f.path).name, f.line, f.kind) for f in findings] == [("authz-1.log", 2, "API key")]
    assert key not in str(findings[0])
