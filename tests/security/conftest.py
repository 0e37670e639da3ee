"""The real edge for the security suite: Envoy with uplion's filters in front of the accounts,
authz and gateway services and two echo workers (with billing, in their own Pulsar namespace), on
their own PostgreSQL database and Redis database, reusing the session's PostgreSQL, Redis and
Pulsar (tests/conftest.py) and the edge suite's helpers (tests/edge/conftest.py), with the
rate-limit service on the same Redis database.
Clients bind distinct loopback addresses (127.0.0.x) to act as distinct client machines; Envoy tells
the accounts service (and authz) which one it saw.

`echo_edge`: the same edge configuration (uplion.edge.local) and the same authz and rate-limit
services, but with a recording gRPC server in place of the gateway and the accounts service, to see
exactly which headers reach the services behind the edge."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from tests.edge.conftest import _new_database
from uplion.accounts.cli import Client
from uplion.devstack.platform import (
    Service,
    bootstrap_admin,
    start_accounts,
    start_authz,
    start_billing,
    start_edge,
    start_gateway,
    start_worker,
)
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import Redis
from uplion.v1 import admin_pb2

MODELS = ["sec-echo", "sec-other"]
ADMIN_EMAIL = "root@security.test"
ADMIN_PASSWORD = "root-password-correct"
MSG = [{"role": "user", "content": "hi"}]


@dataclass
class SecurityEdge:
    url: str
    dsn: str
    accounts: Service
    admin: Client  # the admin API over gRPC with the bootstrap admin's admin-scoped token
    admin_token: str
    admin_id: str
    authz: Service | None = None
    ratelimit: Service | None = None
    redis_url: str = ""  # the Redis database of this edge's services (records, counters, limits)

    def http(self, credential: str | None = None, address: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client of the edge from loopback address `address`."""
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, headers=headers, transport=transport, timeout=30)

    def member(self, password: str = "member-password-1", **user: Any) -> admin_pb2.User:
        email = f"{uuid.uuid4().hex[:10]}@security.test"
        created: admin_pb2.User = self.admin.call(
            "CreateUser", admin_pb2.CreateUserRequest(email=email, password=password, **user)
        )
        return created

    def key(self, user_id: str, **token: Any) -> admin_pb2.CreateTokenResponse:
        """An inference key for `user_id`, made by the admin."""
        created: admin_pb2.CreateTokenResponse = self.admin.call(
            "CreateToken", admin_pb2.CreateTokenRequest(user_id=user_id, name="k", **token)
        )
        return created

    def login(self, email: str, password: str, address: str = "127.0.0.1") -> str:
        with self.http(address=address) as c:
            r = c.post("/admin/v1/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        session: str = r.json()["session_token"]
        return session

    def chat(self, key: str, model: str = "sec-echo") -> httpx.Response:
        """A chat request, retried as the SDKs retry while the rest of a limited member's quota is
        held by their previous request until billing applies it (429 `quota_held`, retry-after)."""
        with self.http(key) as c:
            for _ in range(50):
                r = c.post("/v1/chat/completions", json={"model": model, "messages": MSG})
                if r.status_code != 429 or r.json()["error"]["code"] != "quota_held":
                    return r
                time.sleep(0.1)
            return r


@pytest.fixture(scope="session")
async def security_edge(
    broker: Pulsar, postgres: Postgres, redis_server: Redis, run_dir: Path
) -> AsyncIterator[SecurityEdge]:
    d = run_dir / "security"
    d.mkdir()
    dsn = await _new_database(postgres, "security")
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"  # its own keys: login counters, records
    accounts = start_accounts(d, dsn, redis_url)
    authz = start_authz(d, dsn, redis_url)
    boot = bootstrap_admin(dsn, ADMIN_EMAIL)
    admin = Client(f"127.0.0.1:{accounts.port}", boot["secret"])
    # the bootstrap admin has no password yet: an admin may set their own first one
    admin.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=boot["user_id"], password=ADMIN_PASSWORD))
    # its own Pulsar namespace, with billing: it releases the quota holds authz makes for limited
    # members (uplion.core.quota), as in every deployment
    ns = "security"
    broker.create_namespace(ns)
    gw = start_gateway(d, broker.service_url, MODELS, UPLION_PULSAR_NAMESPACE=ns)
    workers = [start_worker(d, broker.service_url, m, UPLION_PULSAR_NAMESPACE=ns) for m in MODELS]
    billing = start_billing(d, broker.service_url, dsn, redis_url, UPLION_PULSAR_NAMESPACE=ns)
    ratelimit = start_ratelimit(d, redis_url)  # the packaged rules; no settler (nothing here settles)
    envoy, port = start_edge(
        d, gw.port, authz_port=authz.port, accounts_port=accounts.port, ratelimit_ports=(ratelimit.port,)
    )
    yield SecurityEdge(
        f"http://127.0.0.1:{port}", dsn, accounts, admin, boot["secret"], boot["user_id"], authz, ratelimit, redis_url
    )
    envoy.stop()
    admin.channel.close()
    for svc in [*workers, gw, billing, ratelimit, authz, accounts]:
        svc.stop()


@dataclass(frozen=True)
class Call:
    """One RPC the recording server answered: its method and the metadata (headers) it arrived with."""

    method: str
    metadata: tuple[tuple[str, str], ...]

    def uplion_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.metadata if k.startswith("x-uplion-")}


if TYPE_CHECKING:
    _Handler = grpc.GenericRpcHandler[Any, Any]
else:
    _Handler = grpc.GenericRpcHandler  # not subscriptable at run time


class Recorder(_Handler):
    """A gRPC server's only handler: answers every unary call with an empty message (every field at
    its default) and records what arrived."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata = tuple((str(k), str(v)) for k, v in handler_call_details.invocation_metadata)
        with self._lock:
            self.calls.append(Call(str(handler_call_details.method), metadata))
        return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

    def last(self, method_suffix: str) -> Call:
        with self._lock:
            found = [c for c in self.calls if c.method.endswith(method_suffix)]
        assert found, f"no call to {method_suffix} reached the service"
        return found[-1]


@dataclass
class EchoEdge:
    url: str
    recorder: Recorder

    def http(self, credential: str | None = None, address: str = "127.0.0.1") -> httpx.Client:
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=self.url, headers=headers, transport=transport, timeout=30)


@pytest.fixture(scope="session")
def echo_edge(security_edge: SecurityEdge, run_dir: Path) -> Iterator[EchoEdge]:
    assert security_edge.authz is not None
    assert security_edge.ratelimit is not None
    recorder = Recorder()
    server = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[recorder])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    envoy, edge_port = start_edge(
        run_dir / "security-echo", port, authz_port=security_edge.authz.port, accounts_port=port,
        ratelimit_ports=(security_edge.ratelimit.port,),
    )  # fmt: skip
    yield EchoEdge(f"http://127.0.0.1:{edge_port}", recorder)
    envoy.stop()
    server.stop(grace=None)
