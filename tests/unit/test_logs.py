"""One JSON object per log line, with plain extra fields and no library objects."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from uplion.core.logs import JsonFormatter


@dataclass
class _Settings:  # stands in for kopf's OperatorSettings, which kopf attaches to its records
    blob: str = field(default="x" * 3000)


def test_extra_fields_are_plain_values_and_objects_are_left_out() -> None:
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler succeeded", (), None)
    record.__dict__.update({"settings": _Settings(), "k8s_ref": {"name": "m", "namespace": "ns"}, "model": "gpt",
                            "inflight": 3})  # fmt: skip
    line = JsonFormatter("operator").format(record)
    out = json.loads(line)
    assert out["msg"] == "Handler succeeded"
    assert out["service"] == "operator"
    assert out["k8s_ref"] == {"name": "m", "namespace": "ns"}
    assert (out["model"], out["inflight"]) == ("gpt", 3)
    assert "settings" not in out
    assert len(line) < 400
