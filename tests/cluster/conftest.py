"""The edge on a real 3-master Redis Cluster: accounts, authz, the Go rate limiter and its settler,
and billing all in cluster mode (`UPLION_REDIS_CLUSTER=true`, seeded with one node's URL), behind
real Envoy, the gateway and an echo worker on real Pulsar and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis

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
from uplion.devstack.ratelimit import RateLimit, start_ratelimit
from uplion.devstack.redis import RedisCluster, start_redis_cluster

from ..databases import new_database

MODEL = "cluster-echo"


@dataclass
class ClusterEdge:
    url: str
    dsn: str
    cluster: RedisCluster
    namespace: str  # the Pulsar namespace of this stack's topics
    admin: Client
    authz: Service
    accounts: Service
    gateway: Service
    ratelimit: RateLimit
    billing: Service

    def redis(self) -> redis.RedisCluster:
        return redis.RedisCluster.from_url(self.cluster.url, decode_responses=True)

    def new_key(self) -> tuple[str, str, str]:
        """A fresh member with one key: (user id, token id, secret)."""
        user, created = self.admin.create_user_with_token(f"{uuid.uuid4().hex[:10]}@cluster.test")
        return user.user_id, created.token.token_id, created.secret

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="session")
def redis_cluster(run_dir: Path) -> Iterator[RedisCluster]:
    c = start_redis_cluster(run_dir / "redis-cluster")
    yield c
    c.stop()


@pytest.fixture(scope="session")
def cluster_edge(
    broker: Pulsar, postgres: Postgres, redis_cluster: RedisCluster, run_dir: Path
) -> Iterator[ClusterEdge]:
    d = run_dir / "cluster-edge"
    d.mkdir()
    ns = f"cluster_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(ns)
    dsn = new_database(postgres, "cluster_edge")
    url = redis_cluster.url
    accounts = start_accounts(d, dsn, url, UPLION_REDIS_CLUSTER="true")
    authz = start_authz(d, dsn, url, UPLION_REDIS_CLUSTER="true")
    admin = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn)["secret"])
    gw = start_gateway(d, broker.service_url, [MODEL], UPLION_PULSAR_NAMESPACE=ns)
    worker = start_worker(d, broker.service_url, MODEL, UPLION_MAX_PROCESS_NUM="16", UPLION_PULSAR_NAMESPACE=ns)
    # the burst test runs Envoy, authz, two limiter replicas and three Redis nodes on 2 cores: the
    # decision bound is raised from 50 ms to 1 s, as in tests/edge (exactness is what is tested)
    limiters = [
        start_ratelimit(
            d, url, pulsar_url=broker.service_url if i == 0 else "", UPLION_RATELIMIT_REDIS_TIMEOUT_MS="1000",
            UPLION_REDIS_CLUSTER="true", UPLION_PULSAR_NAMESPACE=ns,
        )
        for i in range(2)
    ]  # fmt: skip
    billing = start_billing(d, broker.service_url, dsn, url, UPLION_BILLING_BATCH_DELAY_MS="50",
                            UPLION_REDIS_CLUSTER="true", UPLION_PULSAR_NAMESPACE=ns)  # fmt: skip
    envoy, port = start_edge(
        d, gw.port, authz_port=authz.port, accounts_port=accounts.port, ratelimit_ports=tuple(r.port for r in limiters)
    )
    yield ClusterEdge(f"http://127.0.0.1:{port}", dsn, redis_cluster, ns, admin, authz, accounts, gw, limiters[0],
                      billing)  # fmt: skip
    envoy.stop()
    for svc in [worker, gw, billing, *limiters, authz, accounts]:
        svc.stop()
