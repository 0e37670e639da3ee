"""The HTTP edge under test: real Envoy (uplion's filters) → gateway → Pulsar → workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from uplion.devstack.platform import Service, start_edge, start_gateway, start_worker
from uplion.devstack.pulsar import Pulsar

EDGE_MODELS = ["edge-echo", "edge-slow", "edge-broken"]


@pytest.fixture(scope="session")
def edge_stack(broker: Pulsar, run_dir: Path) -> Iterator[str]:
    d = run_dir / "edge"
    d.mkdir()
    gw = start_gateway(d, broker.service_url, EDGE_MODELS, UPLION_DEFAULT_TIMEOUT_S="60")
    workers = [
        start_worker(d, broker.service_url, "edge-echo", UPLION_MAX_PROCESS_NUM="16"),
        start_worker(d, broker.service_url, "edge-slow", UPLION_ECHO_TOKEN_DELAY_MS="300"),
        start_worker(d, broker.service_url, "edge-broken", UPLION_MAX_ATTEMPTS="1"),
    ]
    envoy, port = start_edge(d, gw.port)
    yield f"http://127.0.0.1:{port}"
    envoy.stop()
    for w in workers:
        w.stop()
    gw.stop()


@pytest.fixture
def client(edge_stack: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge_stack}/v1", api_key="unused-until-authz", max_retries=0)


@pytest.fixture
def base_url(edge_stack: str) -> str:
    return edge_stack


def gateways() -> list[Service]:
    return []
