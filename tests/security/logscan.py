"""Finding secrets in the log files a test session's services wrote: API keys (`upl-` and the
secret), session tokens (signed JWTs) and every password the tests use (collected from the test
sources, so a new test's passwords are covered without a list to maintain). Findings name the
file, the line and the kind of secret, never the secret itself. Used by tests/zz_logscan, which
runs last."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from uplion.core.credentials import SECRET_LEN, SECRET_PREFIX

API_KEY = re.compile(re.escape(SECRET_PREFIX) + f"[A-Za-z0-9]{{{SECRET_LEN}}}(?![A-Za-z0-9])")
SESSION_TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")
# shorter "passwords" in the tests are wrong guesses like "wrong" or "short": words any log may hold
MIN_PASSWORD_LEN = 8
_PASSWORD_NAME = re.compile("password", re.IGNORECASE)
# Files under the scanned roots that are no service's log, with the reason.
EXEMPT = {
    "up.log": "the transcript of the run command's terminal (tests/test_quickstart.py, tests/web/test_console_e2e.py), "
    "which prints the demo member's API key, the admin token and the console passwords on purpose (README: Try it)",
}
STACK_TRANSCRIPTS = ("test_run_command", "test_console_end_to_end")  # the tests' own temporary folders


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}"


def is_log_file(path: PurePath) -> bool:
    """Service logs, Envoy's, PostgreSQL's, Redis's, Pulsar's and RocksDB's (`*.log`, rotated
    `*.log.1`, `LOG`, `*_LOG`, anything in a `log`/`logs`/`*-log` directory); not data files."""
    name = path.name.lower()
    if name.endswith(".log") or ".log." in name or name == "log" or name.endswith("_log"):
        return True
    return any(p.lower() in ("log", "logs") or p.lower().endswith("-log") for p in path.parent.parts)


def exemption(path: PurePath) -> str | None:
    return EXEMPT.get(path.name) if path.parent.name.startswith(STACK_TRANSCRIPTS) else None


def secrets_in_line(line: str, passwords: Collection[str]) -> list[str]:
    """The kinds of secret a log line holds."""
    kinds = []
    if API_KEY.search(line):
        kinds.append("API key")
    if SESSION_TOKEN.search(line):
        kinds.append("session token")
    if any(p in line for p in passwords):
        kinds.append("password used by the tests")
    return kinds


def log_files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        if root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and is_log_file(p.relative_to(root)))


def scan(roots: Iterable[Path], passwords: Collection[str]) -> tuple[list[Finding], int]:
    """Every line of every log file under `roots` that holds a secret, and how many files were read."""
    findings, files = [], 0
    for path in log_files(roots):
        if exemption(path) is not None:
            continue
        files += 1
        with path.open(encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                findings += [Finding(str(path), number, kind) for kind in secrets_in_line(line, passwords)]
    return findings, files


def _strings(node: ast.expr | None, bound: dict[str, set[str]]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name):
        return bound.get(node.id, set())
    return set()


def _bind(target: ast.expr, value: ast.expr, bound: dict[str, set[str]]) -> None:
    if isinstance(target, ast.Name):
        bound[target.id] |= _strings(value, {})
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts, strict=True):
            _bind(t, v, bound)


def passwords_in(source: str) -> set[str]:
    """String literals a test module uses as passwords: passed as (or bound to) anything named
    `*password*` (keyword arguments, dict keys, defaults, assignments), directly or through a name
    bound to a literal in the same module."""
    tree = ast.parse(source)
    bound: dict[str, set[str]] = defaultdict(set)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                _bind(target, node.value, bound)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            _bind(node.target, node.value, bound)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg and _PASSWORD_NAME.search(node.arg):
            found |= _strings(node.value, bound)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and _PASSWORD_NAME.search(key.value):
                    found |= _strings(value, bound)
        elif isinstance(node, ast.arguments):
            positional = [*node.posonlyargs, *node.args]
            pairs = [*zip(positional[len(positional) - len(node.defaults) :], node.defaults, strict=True)]
            pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d is not None]
            for arg, default in pairs:
                if _PASSWORD_NAME.search(arg.arg):
                    found |= _strings(default, bound)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and _PASSWORD_NAME.search(target.id):
                    found |= _strings(node.value, bound)
    return {p for p in found if len(p) >= MIN_PASSWORD_LEN}


def suite_passwords(tests_dir: Path) -> set[str]:
    """Every password the test suite uses (`passwords_in` over every test module)."""
    out: set[str] = set()
    for path in sorted(tests_dir.rglob("*.py")):
        out |= passwords_in(path.read_text())
    return out
