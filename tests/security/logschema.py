"""One log schema across uplion's services: every JSON line has `ts` (UTC, milliseconds, Z), `level`
(debug, info, warning, error, critical), `service`, `logger` and `msg`; extra keys are data. Lines
that are not JSON may only be a service's start banner (`uplion <service> ...`, the line the scripts
wait for), a Python warning and its source line, or a warning of the Pulsar C++ client in its own
format. Used by tests/zz_logscan over a whole run."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("gateway", "worker", "accounts", "authz", "billing", "ratelimit-", "settler", "operator", "console")
LEVELS = {"debug", "info", "warning", "error", "critical"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BANNER = re.compile(r"^uplion [a-z-]+ ")
# the Pulsar C++ client's own warnings (uplion.core.pulsar.CLIENT_LOGGER says why not JSON)
PULSAR_CLIENT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (WARN|ERROR) +\[\d+\] \w+:\d+ \| ")
WARNING = re.compile(r"^\S+\.py:\d+: \w*Warning: ")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def line_problem(line: str) -> str | None:
    """What is wrong with one JSON log line (None: it follows the schema)."""
    try:
        record = json.loads(line)
    except ValueError:
        return "not JSON"
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in ("ts", "level", "service", "logger", "msg") if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(record["ts"], str) or not TS.match(record["ts"]):
        return f"ts {record['ts']!r} is not UTC with milliseconds"
    if record["level"] not in LEVELS:
        return f"level {record['level']!r}"
    if not all(isinstance(record[k], str) and record[k] for k in ("service", "logger")):
        return "service and logger must be non-empty strings"
    return None


def file_problems(path: Path, lines: Iterable[str]) -> Iterator[Problem]:
    after_warning = False
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("{"):
            what = line_problem(line)
            if what:
                yield Problem(str(path), n, what)
            after_warning = False
        elif BANNER.match(line) or WARNING.match(line) or PULSAR_CLIENT.match(line):
            after_warning = bool(WARNING.match(line))
        elif after_warning and line.startswith(" "):
            after_warning = False  # the warning's source line
        else:
            yield Problem(str(path), n, f"not a log record: {line[:80]!r}")


def service_logs(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*.log"):
            if path.is_file() and path.name.startswith(SERVICES):
                yield path
