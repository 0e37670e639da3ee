"""The HTTP edge under test: real Envoy (uplion's filters, ext_authz) → gateway → Pulsar → workers,
with the accounts and authz services on real PostgreSQL and Redis. `edge-remote` is a remote model
whose upstream is the wire-true fake OpenAI account (tests/fakes), answering with OpenAI's full
members (`rich-*` key); `edge-responses` is one whose upstream serves the Responses API itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest

from uplion.accounts.cli import Client
from uplion.devstack.envoy import Envoy
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import Redis

from ..fakes.openai_server import FakeOpenAI, threaded

EDGE_MODELS = ["edge-echo", "edge-slow", "edge-broken", "edge-remote", "edge-responses"]


@dataclass
class Edge:
    url: str
    dsn: str
    redis: Redis
    accounts: Service
    authz: Service
    envoy: Envoy
    admin: Client  # the admin API, as the first admin
    api_key: str  # a member's key that may use every model
    gateway: Service
    ratelimit: Service
    upstream: FakeOpenAI  # edge-remote's upstream

    def new_key(self, **token: Any) -> tuple[str, str, str]:
        """A fresh member with one key: (user id, token id, secret)."""
        user, created = self.admin.create_user_with_token(f"{uuid.uuid4().hex[:10]}@edge.test")
        if token:
            from uplion.v1 import admin_pb2

            self.admin.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=created.token.token_id, **token))
        return user.user_id, created.token.token_id, created.secret

    def sdk(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.api_key, max_retries=0)


async def _new_database(postgres: Postgres, name: str) -> str:
    admin = await asyncpg.connect(postgres.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return postgres.dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
async def edge(broker: Pulsar, postgres: Postgres, redis_server: Redis, run_dir: Path) -> AsyncIterator[Edge]:
    d = run_dir / "edge"
    d.mkdir()
    dsn = await _new_database(postgres, "edge")
    accounts = start_accounts(d, dsn, redis_server.url)
    authz = start_authz(d, dsn, redis_server.url)
    admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn)["secret"])
    _, token = admin.create_user_with_token("member@edge.test")
    stack = ExitStack()
    upstream = stack.enter_context(threaded())
    gw = start_gateway(d, broker.service_url, EDGE_MODELS, UPLION_DEFAULT_TIMEOUT_S="60",
                       UPLION_REMOTE_MODELS="edge-remote", UPLION_RESPONSES_MODELS="edge-responses",
                       UPLION_DATABASE_URL=dsn)  # fmt: skip
    workers = [
        start_worker(
            d, broker.service_url, "edge-remote", "remote", UPLION_BASE_URL=upstream.base_url, UPLION_API_KEYS="rich-1"
        ),
        start_worker(  # an upstream that serves the Responses API itself: requests are passed through
            d,
            broker.service_url,
            "edge-responses",
            "remote",
            UPLION_BASE_URL=upstream.base_url,
            UPLION_API_KEYS="good-responses",
            UPLION_UPSTREAM_MODEL="fake-responses-model",
        ),
        start_worker(d, broker.service_url, "edge-echo", UPLION_MAX_PROCESS_NUM="16"),
        start_worker(d, broker.service_url, "edge-slow", UPLION_ECHO_TOKEN_DELAY_MS="300"),
        start_worker(d, broker.service_url, "edge-broken", UPLION_MAX_ATTEMPTS="1"),
    ]
    ratelimit = start_ratelimit(d, redis_server.url, pulsar_url=broker.service_url)
    envoy, port = start_edge(
        d, gw.port, authz_port=authz.port, accounts_port=accounts.port, ratelimit_ports=(ratelimit.port,)
    )
    yield Edge(f"http://127.0.0.1:{port}", dsn, redis_server, accounts, authz, envoy, admin, token.secret, gw,
               ratelimit, upstream)  # fmt: skip
    envoy.stop()
    for svc in [*workers, gw, ratelimit, authz, accounts]:
        svc.stop()
    stack.close()


@pytest.fixture
def client(edge: Edge) -> openai.OpenAI:
    return edge.sdk()


@pytest.fixture
def base_url(edge: Edge) -> str:
    return edge.url


@pytest.fixture
def auth(edge: Edge) -> dict[str, str]:
    """Headers for raw HTTP requests with the member's key."""
    return {"authorization": f"Bearer {edge.api_key}"}
