"""Redis over TLS (`rediss://`, as ElastiCache with encryption in transit is reached): the Go rate
limiter and the Python services connect through a TLS-terminating proxy that trusts nothing but
its own certificate, given to them as `SSL_CERT_FILE`; without that trust the limiter refuses the
server's certificate and never starts deciding."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.exceptions

from uplion.core.redis_client import Call, connect, run_scripts
from uplion.devstack.gotools import ratelimit_binary
from uplion.devstack.platform import service_env
from uplion.devstack.procs import free_port, spawn, tcp_open
from uplion.devstack.ratelimit import start_ratelimit
from uplion.devstack.redis import Redis
from uplion.devstack.redis_tls import TlsRedis, start_tls_proxy

from ..ratelimit.conftest import caller, request


@pytest.fixture(scope="module")
def tls_redis(redis_server: Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    proxy = start_tls_proxy(tmp_path_factory.mktemp("redis-tls"), redis_server.port)
    yield proxy
    proxy.stop()


def test_the_go_limiter_decides_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "tls.yaml").write_text(
        "domain: tls\ndescriptors:\n  - key: user_id\n    rate_limit: {unit: minute, requests_per_unit: 3}\n"
    )
    limiter = start_ratelimit(tmp_path, tls_redis.url, config_dir=rules, SSL_CERT_FILE=str(tls_redis.ca_file))
    try:
        decide = caller(limiter.port)
        user = f"tls-{time.time_ns()}"
        codes = [decide(request("tls", [("user_id", user)])).overall_code for _ in range(5)]
        assert codes == [1, 1, 1, 2, 2]  # OK three times, then OVER_LIMIT: counted in Redis, through TLS
        assert limiter.metric("uplion_ratelimit_redis_failures_total") == 0
    finally:
        limiter.stop()


def test_the_go_limiter_refuses_a_server_it_does_not_trust(tls_redis: TlsRedis, tmp_path: Path) -> None:
    port = free_port()
    untrusting = {"UPLION_RATELIMIT_LISTEN": f"127.0.0.1:{port}", "UPLION_REDIS_URL": tls_redis.url,
                  "SSL_CERT_FILE": str(tmp_path / "an-empty-bundle.pem")}  # fmt: skip
    (tmp_path / "an-empty-bundle.pem").write_text("")
    log = tmp_path / "untrusting.log"
    proc = spawn("ratelimit", [str(ratelimit_binary())], log, env=service_env(untrusting))
    try:
        deadline = time.monotonic() + 20
        while "certificate" not in log.read_text():  # it retries every second, and says why
            assert time.monotonic() < deadline, log.read_text()
            assert proc.alive(), log.read_text()
            time.sleep(0.2)
        assert not tcp_open("127.0.0.1", port)  # it never listens without Redis
    finally:
        proc.stop()


async def test_python_clients_speak_tls_with_the_same_trust(
    tls_redis: TlsRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.ca_file))
    r = connect(tls_redis.url, cluster=False)
    key = f"tls:once:{time.time_ns()}"
    assert await run_scripts(r, [Call("return redis.call('INCR', KEYS[1])", [key], [])]) == [1]
    await r.aclose()
    # the same client without that trust refuses the server
    (tmp_path / "empty.pem").write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
    untrusting = connect(tls_redis.url, cluster=False)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate"):
        await untrusting.ping()
    await untrusting.aclose()
