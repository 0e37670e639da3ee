"""The pure parts of per-model Pulsar worker tokens (no services): the operator's settings, the
token Secret, the workers' mount, KEDA's TriggerAuthentication and trigger, and the PulsarAccess
condition."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from uplion.core import pulsar_auth
from uplion.core.config import ConfigError
from uplion.operator import children, status
from uplion.operator.settings import Settings

KEY = bytes(range(32))


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "chat", "namespace": "tenant-a", "uid": "u1", "generation": 3},
            "spec": {"type": "echo", "model": "chat-model", **spec}}  # fmt: skip


def settings(tmp_path: Path, key: bytes | None = KEY, **env: str) -> Settings:
    base = {"UPLION_PULSAR_TOKEN": pulsar_auth.mint(KEY, pulsar_auth.SUPERUSER),
            "UPLION_PULSAR_REPLY_NAMESPACE": "default-replies"}  # fmt: skip
    if key is not None:
        (tmp_path / "key").write_bytes(key)
        base["UPLION_PULSAR_SIGNING_KEY_FILE"] = str(tmp_path / "key")
    return Settings.from_env({**base, **env})


def test_settings_tokens_on_with_the_key_and_off_without(tmp_path: Path) -> None:
    on = settings(tmp_path)
    assert on.tokens
    assert on.signing_key == KEY
    assert on.topics.reply_namespace == "default-replies"
    assert on.platform.pulsar_url == "pulsar://pulsar-broker.pulsar:6650"  # the operator's default
    assert pulsar_auth.role_of(on.pulsar.token, KEY) == pulsar_auth.SUPERUSER
    assert str(KEY) not in repr(on)
    assert on.pulsar.token not in repr(on)
    off = Settings.from_env({})  # as today: no token, no grants, nothing else required
    assert not off.tokens
    assert off.pulsar_admin_url == "http://pulsar-broker.pulsar:8080"


@pytest.mark.parametrize(
    ("key", "env", "why"),
    [
        (KEY, {"UPLION_PULSAR_TOKEN": ""}, "needs a superuser's token"),
        (KEY, {"UPLION_PULSAR_REPLY_NAMESPACE": ""}, "needs UPLION_PULSAR_REPLY_NAMESPACE"),
        (KEY, {"UPLION_PULSAR_REPLY_NAMESPACE": "default"}, "other than UPLION_PULSAR_NAMESPACE"),
        (b"short", {}, "holds 5 bytes"),
        (KEY, {"UPLION_PULSAR_SIGNING_KEY_FILE": "/nonexistent/key"}, "cannot read /nonexistent/key"),
        (KEY, {"UPLION_PULSAR_TOKEN_FILE": "/nonexistent/token"}, "not both"),
    ],
)
def test_settings_refuse_what_tokens_cannot_work_with(
    tmp_path: Path, key: bytes, env: dict[str, str], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        settings(tmp_path, key, **env)


def test_the_token_secret_is_owned_by_the_aimodel_and_holds_the_roles_token() -> None:
    token = pulsar_auth.mint(KEY, pulsar_auth.worker_role("chat-model"))
    secret = children.token_secret(body(), token)
    assert secret["metadata"]["name"] == "aimodel-chat-pulsar-token" == children.token_secret_name("chat")
    assert secret["metadata"]["namespace"] == "tenant-a"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("AIModel", "chat", "u1")
    assert pulsar_auth.role_of(base64.b64decode(secret["data"]["token"]).decode(), KEY) == "uplion-worker-chat-model"
    assert children.stored_token({"data": secret["data"]}) == token
    assert children.stored_token(None) == ""
    assert children.stored_token({"data": {"token": "not base64!"}}) == ""


def test_workers_mount_the_token_and_never_get_it_as_a_value() -> None:
    token = pulsar_auth.mint(KEY, pulsar_auth.worker_role("chat-model"))
    b = body(env=[{"name": "UPLION_PULSAR_TOKEN", "value": "smuggled"}, {"name": "X", "value": "1"}])
    dep = children.deployment(b, settings_platform(), "v", children.token_digest(token))
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["UPLION_PULSAR_TOKEN_FILE"]["value"] == children.TOKEN_FILE
    assert "UPLION_PULSAR_TOKEN" not in env  # a spec's own would conflict with the file (the worker refuses both)
    assert env["X"]["value"] == "1"
    mount = container["volumeMounts"][0]
    assert f"{mount['mountPath']}/token" == children.TOKEN_FILE
    assert mount["readOnly"] is True
    volume = pod["volumes"][0]
    assert volume["name"] == mount["name"]
    assert volume["secret"] == {"secretName": "aimodel-chat-pulsar-token", "items": [{"key": "token", "path": "token"}]}
    assert token not in json.dumps(dep)
    # a new token (rename, new key) changes the pod template: the workers restart and read it
    other = children.token_digest(pulsar_auth.mint(KEY, pulsar_auth.worker_role("renamed")))
    assert children.deployment(b, settings_platform(), "v", other)["spec"]["template"] != dep["spec"]["template"]
    # tokens off: as before, nothing mounted, the spec's env as written
    plain = children.deployment(b, settings_platform(), "v")["spec"]["template"]
    assert [v["name"] for v in plain["spec"]["volumes"]] == [children.JOURNAL_VOLUME]  # no token volume
    assert children.TOKEN_ANNOTATION not in plain["metadata"]["annotations"]
    assert {e["name"]: e for e in plain["spec"]["containers"][0]["env"]}["UPLION_PULSAR_TOKEN"]["value"] == "smuggled"


def settings_platform() -> Any:
    return Settings.from_env({}).platform


def test_keda_reads_the_backlog_with_the_workers_token() -> None:
    b = body(msgBacklogThreshold=4)
    auth = children.trigger_authentication(b)
    assert (auth["apiVersion"], auth["kind"], auth["metadata"]["name"]) == ("keda.sh/v1alpha1", "TriggerAuthentication",
                                                                            "aimodel-chat")  # fmt: skip
    assert auth["spec"] == {"secretTargetRef": [{"parameter": "bearerToken", "name": "aimodel-chat-pulsar-token",
                                                 "key": "token"}]}  # fmt: skip
    assert auth["metadata"]["ownerReferences"][0]["uid"] == "u1"
    scaled = children.scaled_object(b, settings_platform(), authenticated=True)
    assert scaled is not None
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["authModes"] == "bearer"
    assert trigger["authenticationRef"] == {"name": "aimodel-chat", "kind": "TriggerAuthentication"}
    plain = children.scaled_object(b, settings_platform())
    assert plain is not None
    assert "authenticationRef" not in plain["spec"]["triggers"][0]
    assert "authModes" not in plain["spec"]["triggers"][0]["metadata"]


def test_the_pulsar_access_condition_sits_beside_ready_and_keeps_its_transition_time() -> None:
    spec = body()["spec"]
    observed = status.Observed(generation=3, spec=spec, secret_versions="v", replicas=0, ready=0, failure=None)
    failed = status.access_condition(False, "granting: HTTP 401", 3, "t1")
    first = status.compute(observed, "s", "t1", None, failed)
    assert [c["type"] for c in first["conditions"]] == ["Ready", "PulsarAccess"]
    assert first["conditions"][1]["reason"] == "GrantFailed"
    again = status.compute(observed, "s", "t2", first["conditions"], status.access_condition(False, "x", 3, "t2"))
    assert again["conditions"][1]["lastTransitionTime"] == "t1"  # still failing: no transition
    ok = status.compute(observed, "s", "t3", again["conditions"], status.access_condition(True, "granted", 3, "t3"))
    assert ok["conditions"][1]["status"] == "True"
    assert ok["conditions"][1]["lastTransitionTime"] == "t3"
    assert [c["type"] for c in status.compute(observed, "s", "t4", ok["conditions"])["conditions"]] == ["Ready"]
