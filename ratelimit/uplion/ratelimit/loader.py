"""The rule files: every `*.yaml` in a directory (one domain each), reloaded when any changes. A
file that does not parse is reported and the last good rules stay in force."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from pathlib import Path

from prometheus_client import Counter, Gauge

from .rules import Domain, RuleError, merge, parse

log = logging.getLogger("uplion.ratelimit")
LOADS = Counter("uplion_ratelimit_config_loads_total", "Rule reloads by result", ["result"])
LOADED_AT = Gauge("uplion_ratelimit_config_loaded_timestamp_seconds", "When the rules in force were loaded")


def default_rules_text() -> str:
    return resources.files("uplion.ratelimit").joinpath("default.yaml").read_text()


class Rules:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.domains: dict[str, Domain] = {}
        self.last_error = ""
        self._seen: tuple[tuple[str, float, int], ...] | None = None

    def _fingerprint(self) -> tuple[tuple[str, float, int], ...]:
        assert self.directory is not None
        out = []
        for p in sorted(self.directory.glob("*.yaml")) + sorted(self.directory.glob("*.yml")):
            st = p.stat()
            out.append((p.name, st.st_mtime, st.st_size))
        return tuple(out)

    def load(self) -> bool:
        """Read the files if they changed; True if new rules are in force. Raises RuleError only if
        no rules were ever loaded (a service must not start on a broken config)."""
        if self.directory is None:
            if not self.domains:
                self.domains = merge([parse(default_rules_text(), "default.yaml")])
                LOADED_AT.set_to_current_time()
            return False
        fingerprint = self._fingerprint()
        if fingerprint == self._seen:
            return False
        self._seen = fingerprint
        try:
            paths = [self.directory / name for name, _, _ in fingerprint]
            domains = merge([parse(p.read_text(), p.name) for p in paths])
        except (RuleError, OSError) as e:
            LOADS.labels("error").inc()
            self.last_error = str(e)
            log.error("rate-limit config rejected; the last good config stays in force", extra={"error": str(e)})
            if not self.domains:
                raise RuleError(str(e)) from None
            return False
        self.domains = domains
        self.last_error = ""
        LOADS.labels("ok").inc()
        LOADED_AT.set_to_current_time()
        log.info("rate-limit config loaded", extra={"domains": sorted(domains)})
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.load()
