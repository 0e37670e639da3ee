"""Pulsar roles, permissions and tokens (uplion.core.pulsar_auth) and the token settings every service
reads (uplion.core.pulsar.PulsarSettings); tests/security/test_pulsar_auth.py runs them on the broker."""

from __future__ import annotations

from pathlib import Path

import jwt
import pulsar
import pytest

from uplion.core import pulsar_auth as pa
from uplion.core.config import ConfigError
from uplion.core.pulsar import PulsarSettings
from uplion.core.topics import Topics
from uplion.ratelimit.settle import SUBSCRIPTION as SETTLER_SUBSCRIPTION

TOPICS = Topics("public", "prod", "prod-replies")
PREFIX = "persistent://public/prod/"


def grants(p: pa.Permissions) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(g.role, g.target, g.actions) for g in p.grants}


def test_a_worker_may_use_only_its_models_topics_and_the_reply_namespace() -> None:
    p = pa.worker_permissions("gpt-4o", TOPICS)
    role = "uplion-worker-gpt-4o"
    assert grants(p) == {
        (role, PREFIX + "model-gpt-4o", ("produce", "consume")),  # tasks; produce: its own retries
        (role, PREFIX + "model-gpt-4o-cancel", ("consume",)),
        (role, PREFIX + "model-gpt-4o-dlq", ("produce",)),
        (role, "public/prod-replies", ("produce",)),  # any gateway's reply topic, nothing else
    }
    assert p.subscriptions == (pa.SubscriptionRoles("public/prod", "model-gpt-4o-subscription", (role, pa.GATEWAY)),)
    assert p.namespaces() == ["public/prod", "public/prod-replies"]
    # nothing on the task namespace as a whole, so nothing on usage or any other model
    assert not any(g.on_namespace and g.target == "public/prod" for g in p.grants)


def test_roles_of_the_platform_services() -> None:
    assert grants(pa.gateway_permissions(TOPICS)) == {
        (pa.GATEWAY, "public/prod", ("produce", "consume")),
        (pa.GATEWAY, "public/prod-replies", ("consume",)),
    }
    billing = pa.billing_permissions(TOPICS)
    assert grants(billing) == {
        (pa.BILLING, PREFIX + "usage", ("consume",)),
        (pa.BILLING, PREFIX + "usage-dlq", ("produce",)),
        # workers' recovery records live beside the replies (workers produce there already)
        (pa.BILLING, "persistent://public/prod-replies/usage-recovery", ("consume",)),
    }
    assert billing.subscriptions == (
        pa.SubscriptionRoles("public/prod", "billing", (pa.BILLING, pa.GATEWAY)),
        pa.SubscriptionRoles("public/prod-replies", "billing-recovery", (pa.BILLING, pa.GATEWAY)),
    )
    settler = pa.settler_permissions(TOPICS)
    assert grants(settler) == {(pa.SETTLER, PREFIX + "usage", ("consume",))}
    assert settler.subscriptions == (pa.SubscriptionRoles("public/prod", SETTLER_SUBSCRIPTION, (pa.SETTLER,)),)
    assert grants(pa.accounts_permissions(TOPICS)) == {(pa.ACCOUNTS, "public/prod", ("produce",))}


def test_without_a_reply_namespace_replies_live_beside_the_tasks() -> None:
    assert Topics("public", "prod").replies("gw-1") == PREFIX + "gateway-gw-1-replies"
    assert TOPICS.replies("gw-1") == "persistent://public/prod-replies/gateway-gw-1-replies"
    assert TOPICS.tasks("m") == PREFIX + "model-m"  # only the replies move
    assert pa.reply_namespace("prod") == "prod-replies"
    assert pa.worker_role("org/model v2") == "uplion-worker-org-model-v2"  # as its topic name is made


def test_admin_paths() -> None:
    on_topic = pa.Grant("r", PREFIX + "usage", ("consume",))
    assert on_topic.admin_path() == "/admin/v2/persistent/public/prod/usage/permissions/r"
    on_namespace = pa.Grant("r", "public/prod", ("produce",))
    assert on_namespace.admin_path() == "/admin/v2/namespaces/public/prod/permissions/r"
    sub = pa.SubscriptionRoles("public/prod", "billing", ("a",))
    assert sub.admin_path() == "/admin/v2/namespaces/public/prod/permissions/subscription/billing"


def test_tokens_name_the_role_and_need_the_key() -> None:
    key = pa.new_secret_key()
    assert len(key) == 32
    token = pa.mint(key, pa.GATEWAY)
    assert pa.role_of(token, key) == pa.GATEWAY
    assert jwt.decode(token, key, algorithms=["HS256"]) == {"sub": pa.GATEWAY}  # as `pulsar tokens create` makes
    with pytest.raises(jwt.InvalidSignatureError):
        pa.role_of(token, pa.new_secret_key())


def test_settings_read_the_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert PulsarSettings.from_env({}).token == ""
    assert PulsarSettings.from_env({}).client_options()["authentication"] is None  # no authentication
    settings = PulsarSettings.from_env({"UPLION_PULSAR_TOKEN": "tok.en.x", "UPLION_PULSAR_REPLY_NAMESPACE": "r"})
    assert settings.token == "tok.en.x"
    assert "tok.en.x" not in repr(settings)
    assert isinstance(settings.client_options()["authentication"], pulsar.AuthenticationToken)
    assert settings.admin_headers() == {"authorization": "Bearer tok.en.x"}
    assert settings.topics.replies("g") == "persistent://public/r/gateway-g-replies"
    secret = tmp_path / "token"
    secret.write_text("from.a.file\n")  # a mounted Secret's key, trailing newline and all
    assert PulsarSettings.from_env({"UPLION_PULSAR_TOKEN_FILE": str(secret)}).token == "from.a.file"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPLION_PULSAR_TOKEN": "t", "UPLION_PULSAR_TOKEN_FILE": "/x"}, "not both"),
        ({"UPLION_PULSAR_TOKEN_FILE": "/no/such/file"}, "cannot read /no/such/file"),
    ],
)
def test_bad_token_settings_are_configuration_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PulsarSettings.from_env(env)


def test_an_empty_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        PulsarSettings.from_env({"UPLION_PULSAR_TOKEN_FILE": str(empty)})
