"""PostgreSQL stopped under the whole edge: inference with existing keys keeps working (authz answers
from Redis, nothing else on the request path needs the database), the admin API answers at once with
a clear 503 `service_unavailable` and `retry-after` (not an opaque 500, not a hang), and once
PostgreSQL is back on the same port the admin API works again without restarting anything.

Its own PostgreSQL: stopping the session's would stall every other suite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from uplion.accounts.cli import Client
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import Postgres, start_postgres
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.redis import Redis

MODEL = "pgdown-echo"


@dataclass
class Stack:
    url: str
    postgres: Postgres
    pg_dir: Path
    admin_secret: str
    accounts: Service

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"authorization": f"Bearer {self.admin_secret}"}, timeout=20)


@pytest.fixture(scope="module")
def stack(broker: Pulsar, redis_server: Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d: Path = tmp_path_factory.mktemp("postgres-down")
    pg = start_postgres(d / "pg")
    ns = f"pgdown_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    accounts = start_accounts(d, pg.dsn, redis_server.url)
    authz = start_authz(d, pg.dsn, redis_server.url)
    admin_secret = bootstrap_admin(pg.dsn)["secret"]
    gw = start_gateway(d, broker.service_url, [MODEL], UPLION_PULSAR_NAMESPACE=ns)
    worker = start_worker(d, broker.service_url, MODEL, UPLION_PULSAR_NAMESPACE=ns)
    envoy, port = start_edge(d, gw.port, authz_port=authz.port, accounts_port=accounts.port)
    s = Stack(f"http://127.0.0.1:{port}", pg, d / "pg", admin_secret, accounts)
    yield s
    envoy.stop()
    for svc in [worker, gw, authz, accounts]:
        svc.stop()
    s.postgres.stop()


def test_inference_goes_on_and_the_admin_api_is_a_clear_503_while_postgres_is_down(stack: Stack) -> None:
    user, token = Client(f"127.0.0.1:{stack.accounts.port}", stack.admin_secret).create_user_with_token(
        f"{uuid.uuid4().hex[:8]}@pg.test"
    )
    key = token.secret
    sdk = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=20)
    ask = [{"role": "user", "content": "still here"}]
    assert sdk.chat.completions.create(model=MODEL, messages=ask).choices[0].message.content == "still here"  # type: ignore[arg-type]

    port = stack.postgres.port
    stack.postgres.stop()
    time.sleep(1)  # past authz's cache: the key is now read from Redis
    for _ in range(3):
        assert sdk.chat.completions.create(model=MODEL, messages=ask).choices  # type: ignore[arg-type]
    started = time.monotonic()
    down = stack.admin("/admin/v1/users")
    assert time.monotonic() - started < 10  # at once, not after a client's timeout
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "service_unavailable"
    assert "database" in down.json()["error"]["message"]
    assert down.headers["retry-after"] == "5"
    assert stack.accounts.metric("uplion_accounts_redis_publish_failures_total") == 0

    stack.postgres = start_postgres(stack.pg_dir, port=port)
    deadline = time.monotonic() + 30
    while (back := stack.admin("/admin/v1/users")).status_code != 200:
        assert back.status_code == 503, back.text
        assert time.monotonic() < deadline, "the admin API did not come back"
        time.sleep(0.5)
    assert user.user_id in back.text
