"""Pulsar authentication and authorization on the session's real broker, which tests/conftest.py
starts as scripts/run.sh does: token authentication and authorization on (uplion.devstack.pulsar).
A client without a valid token is refused; each role the devstack gives a component
(uplion.core.pulsar_auth) does that component's job and nothing of another's: a model's worker
cannot read another model's tasks or publish usage, billing cannot read tasks. Every refusal has a
control beside it: the same call with the right role succeeds. Each test has its own namespace."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pulsar
import pytest

from uplion.core import pulsar_auth as pa
from uplion.core.subscriptions import BILLING_SUBSCRIPTION
from uplion.core.topics import Topics
from uplion.devstack.platform import service_env, start_worker
from uplion.devstack.procs import spawn
from uplion.devstack.pulsar import Pulsar, pulsar_credentials

QUIET = pulsar.ConsoleLogger(pulsar.LoggerLevel.Error)
REFUSED_AT_CONNECT = "Failed to authenticate: operation=connect"


@pytest.fixture
def namespace(broker: Pulsar) -> str:
    name = f"secpulsar_{uuid.uuid4().hex[:8]}"
    broker.create_namespace(name)
    return name


def topics_of(namespace: str) -> Topics:
    return Topics("public", namespace, pa.reply_namespace(namespace))


def token_for(broker: Pulsar, namespace: str, role: str, permissions: Callable[[Topics], pa.Permissions]) -> str:
    """The token the devstack gives a component of this role, its permissions granted first."""
    env = {"UPLION_PULSAR_NAMESPACE": namespace}
    return pulsar_credentials(broker.service_url, env, role, permissions)["UPLION_PULSAR_TOKEN"]


def worker_token(broker: Pulsar, namespace: str, model: str) -> str:
    return token_for(broker, namespace, pa.worker_role(model), lambda t: pa.worker_permissions(model, t))


ClientAs = Callable[..., pulsar.Client]


@pytest.fixture
def client_as(broker: Pulsar) -> Iterator[ClientAs]:
    made: list[pulsar.Client] = []

    def make(auth: pulsar.Authentication | None, timeout_s: int = 30) -> pulsar.Client:
        # a client refused at connect retries until its operation timeout; an authorization
        # error comes back at once (a new namespace's first topic can take seconds on a busy machine)
        c = pulsar.Client(broker.service_url, authentication=auth, operation_timeout_seconds=timeout_s, logger=QUIET)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def assert_refused(what: str, attempt: Callable[[], object]) -> None:
    """`attempt` fails with the broker's AuthorizationError (any other error fails the test as it is)."""
    try:
        attempt()
    except pulsar.AuthorizationError:
        return
    pytest.fail(f"allowed: {what}")


def refusals_logged(broker: Pulsar) -> int:
    assert broker.workdir is not None
    return (broker.workdir / "pulsar.log").read_text(errors="replace").count(REFUSED_AT_CONNECT)


def test_a_client_without_a_valid_token_is_refused(broker: Pulsar, namespace: str, client_as: ClientAs) -> None:
    topic = topics_of(namespace).usage()
    client_as(broker.authentication()).create_producer(topic).close()  # control: a valid token is served
    forged = pa.mint(pa.new_secret_key(), pa.SUPERUSER)  # the superuser's name, signed with another key
    for auth in (None, pulsar.AuthenticationToken(forged), pulsar.AuthenticationToken("not-a-jwt")):
        before = refusals_logged(broker)
        with pytest.raises(pulsar.PulsarException):
            client_as(auth, timeout_s=5).create_producer(topic)
        assert refusals_logged(broker) > before  # the broker refused the connection at authentication
    # the admin REST API as well
    url = f"{broker.admin_url}/admin/v2/persistent/public/{namespace}/usage/stats"
    for headers in ({}, {"authorization": f"Bearer {forged}"}):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert e.value.code == 401
    assert "subscriptions" in broker.admin_get(f"/admin/v2/persistent/public/{namespace}/usage/stats")  # type: ignore[operator]


def test_a_worker_cannot_read_another_models_topics_or_publish_usage(
    broker: Pulsar, namespace: str, client_as: ClientAs
) -> None:
    topics = topics_of(namespace)
    token_a = worker_token(broker, namespace, "model-a")
    worker_token(broker, namespace, "model-b")  # model b is served too: its topics and grants exist
    a = client_as(pulsar.AuthenticationToken(token_a))
    # control: everything model a's workers do
    a.subscribe(
        topics.tasks("model-a"), topics.subscription("model-a"), consumer_type=pulsar.ConsumerType.Shared
    ).close()
    a.create_reader(topics.cancels("model-a"), pulsar.MessageId.latest).close()
    a.create_producer(topics.tasks("model-a")).close()  # a retry
    a.create_producer(topics.dead_letters("model-a")).close()
    a.create_producer(topics.replies("some-gateway")).close()

    refused: dict[str, Callable[[], object]] = {
        "model b's queue": lambda: a.subscribe(topics.tasks("model-b"), topics.subscription("model-b")),
        "model b's tasks on a new subscription": lambda: a.subscribe(topics.tasks("model-b"), "snoop"),
        "model b's tasks with a reader": lambda: a.create_reader(topics.tasks("model-b"), pulsar.MessageId.earliest),
        "model b's cancels": lambda: a.create_reader(topics.cancels("model-b"), pulsar.MessageId.earliest),
        "tasks for model b": lambda: a.create_producer(topics.tasks("model-b")),
        "usage events": lambda: a.create_producer(topics.usage()),
        "reading usage": lambda: a.subscribe(topics.usage(), "snoop"),
    }  # fmt: skip
    for what, attempt in refused.items():
        assert_refused(f"a worker of model-a: {what}", attempt)


def test_a_worker_process_with_another_models_token_does_not_start(
    broker: Pulsar, namespace: str, tmp_path: Path
) -> None:
    # control: the worker the devstack starts for model a, with model a's token, serves
    served = start_worker(tmp_path, broker.service_url, "model-a", UPLION_PULSAR_NAMESPACE=namespace)
    served.stop()
    worker_token(broker, namespace, "model-b")
    env = {"UPLION_MODEL": "model-b", "UPLION_MODEL_TYPE": "echo", "UPLION_PULSAR_URL": broker.service_url,
           "UPLION_PULSAR_NAMESPACE": namespace, "UPLION_PULSAR_TOKEN": worker_token(broker, namespace, "model-a"),
           "UPLION_METRICS_PORT": "0"}  # fmt: skip
    proc = spawn("worker", [sys.executable, "-m", "uplion.worker"], tmp_path / "wrong-token.log", env=service_env(env))
    try:
        code = proc.popen.wait(timeout=120)
    finally:
        proc.stop()
    log = proc.log_path.read_text(errors="replace")
    assert code != 0, log
    assert "AuthorizationError" in log, log
    assert "serving model" not in log


def test_billing_and_the_settler_read_only_their_usage_subscription(
    broker: Pulsar, namespace: str, client_as: ClientAs
) -> None:
    topics = topics_of(namespace)
    worker_token(broker, namespace, "model-a")
    billing = client_as(pulsar.AuthenticationToken(token_for(broker, namespace, pa.BILLING, pa.billing_permissions)))
    settler = client_as(pulsar.AuthenticationToken(token_for(broker, namespace, pa.SETTLER, pa.settler_permissions)))
    # control: their own subscriptions, and billing's dead letters
    billing.subscribe(topics.usage(), BILLING_SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover).close()
    billing.create_producer(topics.usage() + "-dlq").close()
    settler.subscribe(topics.usage(), pa.SETTLER_SUBSCRIPTION, consumer_type=pulsar.ConsumerType.Failover).close()
    refused: dict[str, Callable[[], object]] = {
        "billing reading tasks": lambda: billing.subscribe(topics.tasks("model-a"), "snoop"),
        "billing taking the workers' queue": lambda: billing.subscribe(
            topics.tasks("model-a"), topics.subscription("model-a")
        ),
        "billing publishing usage": lambda: billing.create_producer(topics.usage()),
        "billing taking the settler's subscription": lambda: billing.subscribe(topics.usage(), pa.SETTLER_SUBSCRIPTION),
        "the settler taking billing's subscription": lambda: settler.subscribe(topics.usage(), BILLING_SUBSCRIPTION),
        "the settler reading cancels": lambda: settler.subscribe(topics.cancels("model-a"), "snoop"),
    }  # fmt: skip
    for what, attempt in refused.items():
        assert_refused(what, attempt)


def test_accounts_reads_the_backlog_but_no_message(broker: Pulsar, namespace: str, client_as: ClientAs) -> None:
    topics = topics_of(namespace)
    worker_token(broker, namespace, "model-a")
    token = token_for(broker, namespace, pa.ACCOUNTS, pa.accounts_permissions)
    url = f"{broker.admin_url}/admin/v2/persistent/public/{namespace}/model-model-a/stats"
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200  # the admin API's backlog column
    accounts = client_as(pulsar.AuthenticationToken(token))
    assert_refused("accounts reading tasks", lambda: accounts.subscribe(topics.tasks("model-a"), "snoop"))
    assert_refused("accounts reading usage", lambda: accounts.subscribe(topics.usage(), "snoop"))
    reader = lambda: accounts.create_reader(topics.replies("some-gateway"), pulsar.MessageId.earliest)  # noqa: E731
    assert_refused("accounts reading replies", reader)
