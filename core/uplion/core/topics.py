"""Pulsar topic and subscription names: the one place they are spelled."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Pulsar topic local names allow letters, digits and - _ = : . ; anything else becomes '-'.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=:-]")


def safe_name(model: str) -> str:
    return _UNSAFE.sub("-", model)


@dataclass(frozen=True)
class Topics:
    tenant: str = "public"
    namespace: str = "default"
    reply_namespace: str = ""  # where reply topics live; empty: beside the tasks (uplion.core.pulsar_auth)

    def _full(self, local: str, namespace: str = "") -> str:
        return f"persistent://{self.tenant}/{namespace or self.namespace}/{local}"

    def tasks(self, model: str) -> str:
        return self._full(f"model-{safe_name(model)}")

    def subscription(self, model: str) -> str:
        return f"model-{safe_name(model)}-subscription"

    def cancels(self, model: str) -> str:
        return self._full(f"model-{safe_name(model)}-cancel")

    def dead_letters(self, model: str) -> str:
        return self._full(f"model-{safe_name(model)}-dlq")

    def replies(self, gateway_id: str) -> str:
        return self._full(f"gateway-{safe_name(gateway_id)}-replies", self.reply_namespace)

    def usage(self) -> str:
        return self._full("usage")

    def usage_recovery(self) -> str:
        """Workers' recovery records (billing/README.md, "A gateway that dies"): beside the replies,
        where workers may produce."""
        return self._full("usage-recovery", self.reply_namespace)
