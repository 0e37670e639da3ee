"""Models as AIModel manifests in the local stack: the local runner starts, reconfigures and stops
real worker processes as files come, change and go; the gateway's model list follows the folder;
a manifest that cannot run shows Failed with its reason; and the admin API manages the same folder
(admins only). Real Pulsar, gateway, workers, accounts and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import kube_api
from tests.databases import new_database
from uplion.accounts.cli import Client
from uplion.core.aimodels import Platform
from uplion.core.model_folder import write_model
from uplion.devstack.local_models import LocalModels
from uplion.devstack.platform import Service, bootstrap_admin, start_accounts, start_gateway
from uplion.devstack.postgres import Postgres
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import admin_pb2, aimodel_pb2, inference_pb2_grpc, models_pb2

from .test_request_path import chat


def eventually(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """tests.kube_api.eventually with this suite's default: workers take a while to start."""
    return kube_api.eventually(check, timeout, interval=0.25)


class Folder:
    def __init__(self, root: Path, runner: LocalModels, gateway: Service) -> None:
        self.root, self.runner, self.gateway = root, runner, gateway

    def state(self, name: str) -> dict[str, Any]:
        return self.runner.statuses().get(name, {})

    def wait_state(self, name: str, state: str, timeout: float = 90.0) -> dict[str, Any]:
        return eventually(lambda: self.state(name) if self.state(name).get("state") == state else None, timeout)  # type: ignore[no-any-return]

    def listed(self) -> set[str]:
        with grpc.insecure_channel(f"127.0.0.1:{self.gateway.port}") as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            return {m.id for m in stub.ListModels(models_pb2.ListModelsRequest(), timeout=10).data}

    def ask(self, model: str, text: str) -> str:
        with grpc.insecure_channel(f"127.0.0.1:{self.gateway.port}") as ch:
            stub = inference_pb2_grpc.InferenceServiceStub(ch)
            reply = stub.CreateChatCompletion(chat(model, text), timeout=30)
            return str(reply.choices[0].message.content)


@pytest.fixture(scope="module")
def folder(broker: Pulsar, run_dir: Path) -> Iterator[Folder]:
    root = run_dir / "model-folder"
    models, logs = root / "models", root / "logs"
    models.mkdir(parents=True)
    gateway = start_gateway(logs, broker.service_url, [], UPLION_MODELS_DIR=str(models))
    runner = LocalModels(models, logs, Platform(broker.service_url, broker.admin_url), root / "status.json",
                         environ={"UPLION_SECRET_PROVIDER_TOKEN": "sk-local-test"})  # fmt: skip
    runner.start()
    yield Folder(models, runner, gateway)
    runner.stop()
    gateway.stop()


def test_a_manifest_starts_changes_and_stops_workers(folder: Folder) -> None:
    write_model(folder.root, "folder-echo", {"type": "echo", "model": "folder-echo", "maxProcessNum": 2})
    folder.wait_state("folder-echo", "Running")
    eventually(lambda: "folder-echo" in folder.listed(), 10)
    assert folder.ask("folder-echo", "hello from a manifest") == "hello from a manifest"
    first = list(folder.runner.running["folder-echo"].procs)

    # a changed spec restarts the workers with the new settings
    write_model(folder.root, "folder-echo", {"type": "echo", "model": "folder-echo", "maxProcessNum": 5,
                                             "replicas": 2})  # fmt: skip
    eventually(lambda: folder.runner.running.get("folder-echo") and
               folder.runner.running["folder-echo"].want.env["UPLION_MAX_PROCESS_NUM"] == "5")  # fmt: skip
    status = folder.wait_state("folder-echo", "Running")
    assert status["replicas"] == 2
    assert status["readyReplicas"] == 2
    assert all(not p.alive() for p in first)
    assert folder.ask("folder-echo", "still here") == "still here"
    reasons = [e["reason"] for e in folder.runner.events["folder-echo"]]
    assert "Reconfiguring" in reasons
    assert reasons.count("Started") == 2

    # a removed file stops them and leaves the model list
    now = list(folder.runner.running["folder-echo"].procs)
    (folder.root / "folder-echo.yaml").unlink()
    eventually(lambda: "folder-echo" not in folder.runner.running and all(not p.alive() for p in now))
    eventually(lambda: "folder-echo" not in folder.listed(), 10)


def test_manifests_that_cannot_run_show_failed_with_the_reason(folder: Folder) -> None:
    write_model(folder.root, "no-key", {"type": "remote", "model": "no-key", "baseURL": "http://127.0.0.1:9/v1",
                                        "apiKeys": [{"secretName": "missing", "key": "api-key"}]})  # fmt: skip
    failed = folder.wait_state("no-key", "Failed")
    assert failed["reason"] == "SecretMissing"
    assert "UPLION_SECRET_MISSING_API_KEY" in failed["message"]

    write_model(folder.root, "bad-path", {"type": "local", "model": "bad-path", "modelPath": "/nonexistent/model"})
    failed = folder.wait_state("bad-path", "Failed")
    assert failed["reason"] == "ConfigurationError"
    assert "cannot be loaded" in failed["message"]
    assert not any(p.alive() for p in folder.runner.running["bad-path"].procs)

    (folder.root / "broken.yaml").write_text("apiVersion: uplion.io/v1alpha1\nkind: AIModel\nmetadata: {name: broken}\n"
                                             "spec: {type: gpu, model: broken}\n")  # fmt: skip
    failed = folder.wait_state("broken", "Failed")
    assert failed["reason"] == "InvalidSpec"
    assert "spec.type" in failed["message"]

    # a second manifest serving a model already served is refused, as the operator would
    write_model(folder.root, "a-first", {"type": "echo", "model": "shared-name"})
    write_model(folder.root, "b-second", {"type": "echo", "model": "shared-name"})
    assert folder.wait_state("b-second", "Failed")["reason"] == "DuplicateModel"
    folder.wait_state("a-first", "Running")
    # a provider key in the environment resolves the Secret reference
    write_model(folder.root, "with-key", {"type": "remote", "model": "with-key", "baseURL": "http://127.0.0.1:9/v1",
                                          "apiKeys": [{"secretName": "provider", "key": "token"}]})  # fmt: skip
    eventually(lambda: folder.runner.running.get("with-key"))
    assert folder.runner.running["with-key"].want.env["UPLION_API_KEY_0"] == "sk-local-test"
    for name in ("no-key", "bad-path", "broken", "a-first", "b-second", "with-key"):
        (folder.root / f"{name}.yaml").unlink()
    eventually(lambda: not folder.runner.running)


# --- the admin API on the same folder ------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(folder: Folder, postgres: Postgres, broker: Pulsar, run_dir: Path) -> Iterator[Client]:
    dsn = new_database(postgres, "model_admin")
    accounts = start_accounts(run_dir / "model-folder" / "logs", dsn, UPLION_MODELS_DIR=str(folder.root),
                              UPLION_MODELS_STATUS_FILE=str(folder.runner.status_file),
                              UPLION_PULSAR_ADMIN_URL=broker.admin_url)  # fmt: skip
    client = Client(f"127.0.0.1:{accounts.port}", bootstrap_admin(dsn)["secret"])
    yield client
    client.channel.close()
    accounts.stop()


def test_admins_manage_models_through_the_api(folder: Folder, admin: Client) -> None:
    spec = aimodel_pb2.AIModelSpec(type="echo", model="api-echo", max_process_num=3)
    created = admin.call("CreateAIModel", aimodel_pb2.CreateAIModelRequest(
        model=aimodel_pb2.AIModel(name="api-echo", spec=spec)))  # fmt: skip
    assert created.spec.model == "api-echo"
    assert (folder.root / "api-echo.yaml").exists()
    got = eventually(lambda: (m := admin.call("GetAIModel", aimodel_pb2.GetAIModelRequest(name="api-echo")))
                     .status.state == "Running" and m)  # fmt: skip
    assert got.status.ready_replicas == 1
    assert got.backlog >= 0
    assert folder.ask("api-echo", "made by the API") == "made by the API"

    listed = admin.call("ListAIModels", aimodel_pb2.ListAIModelsRequest(page_size=1))
    assert len(listed.models) == 1
    with pytest.raises(grpc.RpcError) as e:
        admin.call(
            "CreateAIModel", aimodel_pb2.CreateAIModelRequest(model=aimodel_pb2.AIModel(name="api-echo", spec=spec))
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = aimodel_pb2.AIModelSpec(type="remote", model="r")
    with pytest.raises(grpc.RpcError) as e:
        admin.call("CreateAIModel", aimodel_pb2.CreateAIModelRequest(model=aimodel_pb2.AIModel(name="r", spec=bad)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "baseURL" in (e.value.details() or "")

    spec.max_process_num = 6
    admin.call("UpdateAIModel", aimodel_pb2.UpdateAIModelRequest(name="api-echo", spec=spec))
    eventually(lambda: folder.runner.running.get("api-echo") and
               folder.runner.running["api-echo"].want.env["UPLION_MAX_PROCESS_NUM"] == "6")  # fmt: skip
    events = admin.call("ListAIModelEvents", aimodel_pb2.ListAIModelEventsRequest(name="api-echo")).events
    assert {"Started", "Reconfiguring"} <= {e.reason for e in events}

    # a member may not manage models
    user = admin.call("CreateUser", admin_pb2.CreateUserRequest(email="member@models.test", role=admin_pb2.ROLE_MEMBER))
    token = admin.call("CreateToken", admin_pb2.CreateTokenRequest(user_id=user.user_id, name="console",
                                                                   scope=admin_pb2.TOKEN_SCOPE_ADMIN))  # fmt: skip
    member = Client(admin.target, token.secret)
    with pytest.raises(grpc.RpcError) as e:
        member.call("ListAIModels", aimodel_pb2.ListAIModelsRequest())
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    member.channel.close()

    admin.call("DeleteAIModel", aimodel_pb2.DeleteAIModelRequest(name="api-echo"))
    assert not (folder.root / "api-echo.yaml").exists()
    eventually(lambda: "api-echo" not in folder.runner.running)
    with pytest.raises(grpc.RpcError) as e:
        admin.call("GetAIModel", aimodel_pb2.GetAIModelRequest(name="api-echo"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_request_may_not_ask_more_output_than_its_model_allows(folder: Folder) -> None:
    write_model(folder.root, "capped", {"type": "echo", "model": "capped", "maxOutputTokens": 5})
    folder.wait_state("capped", "Running")
    eventually(lambda: "capped" in folder.listed(), 10)
    with grpc.insecure_channel(f"127.0.0.1:{folder.gateway.port}") as ch:
        stub = inference_pb2_grpc.InferenceServiceStub(ch)
        for field in ("max_tokens", "max_completion_tokens"):
            with pytest.raises(grpc.RpcError) as e:
                stub.CreateChatCompletion(chat("capped", "one two three", **{field: 6}), timeout=30)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"'{field}' is 6, more than model 'capped' allows (5)" in (e.value.details() or "")
        reply = stub.CreateChatCompletion(chat("capped", "one two three", max_tokens=5), timeout=30)
        assert reply.choices[0].message.content == "one two three"
    (folder.root / "capped.yaml").unlink()


def test_a_prompt_and_output_must_fit_the_models_context_window(folder: Folder) -> None:
    write_model(folder.root, "small", {"type": "echo", "model": "small", "maxOutputTokens": 8, "maxContextTokens": 16})
    folder.wait_state("small", "Running")
    eventually(lambda: "small" in folder.listed(), 10)
    with grpc.insecure_channel(f"127.0.0.1:{folder.gateway.port}") as ch:
        stub = inference_pb2_grpc.InferenceServiceStub(ch)
        # 40 bytes of text: about 10 tokens; with 8 more of output, 18 > 16
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateChatCompletion(chat("small", "x" * 40, max_tokens=8), timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailers: Any = e.value.trailing_metadata() or ()
        error = json.loads({str(k): str(v) for k, v in trailers}["x-uplion-error"])["error"]
        assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
        assert "maximum context length is 16 tokens" in error["message"]
        reply = stub.CreateChatCompletion(chat("small", "x" * 40, max_tokens=4), timeout=30)
        assert reply.choices[0].message.content == "x" * 40
    (folder.root / "small.yaml").unlink()
