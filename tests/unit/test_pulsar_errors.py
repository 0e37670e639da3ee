"""The Pulsar client's asyncio API raises its own PulsarException, unrelated to pulsar.PulsarException:
`except pulsar.PulsarException` around an awaited call caught nothing (a timed-out task publish
reached clients as UNKNOWN; tests/chaos/test_network_partition.py). Services catch
uplion.core.pulsar.ERRORS, and no service module names pulsar.PulsarException alone."""

from __future__ import annotations

import re
from pathlib import Path

import pulsar
import pulsar.asyncio as pa

from uplion.core.pulsar import ERRORS, SEND_ERRORS

ROOT = Path(__file__).resolve().parents[2]


def test_both_exception_classes_are_caught() -> None:
    assert not issubclass(pa.PulsarException, pulsar.PulsarException)
    for exc in (pa.PulsarException(pulsar.Result.Timeout), pulsar.Timeout("t")):
        assert isinstance(exc, ERRORS)
    assert TimeoutError in SEND_ERRORS


def test_services_using_the_asyncio_client_catch_both() -> None:
    alone = re.compile(r"^\s*except \(?[^\n]*\bpulsar\.PulsarException\b|suppress\(pulsar\.PulsarException", re.M)
    asyncio_users = [p for p in ROOT.glob("*/uplion/*/**/*.py") if "pulsar.asyncio" in p.read_text()]
    assert len(asyncio_users) >= 3  # core, the gateway's dispatcher, the worker's runner
    assert [str(p.relative_to(ROOT)) for p in asyncio_users if alone.search(p.read_text())] == []
