"""In a cluster the gateway serves the models AIModel resources declare, following the API server."""

from __future__ import annotations

from pathlib import Path

import grpc
from kubernetes import client

from tests.kube_api import eventually
from uplion.devstack.kube import Kube
from uplion.devstack.platform import start_gateway
from uplion.devstack.pulsar import Pulsar
from uplion.v1 import inference_pb2_grpc, models_pb2

from .conftest import GROUP, PLURAL, VERSION, aimodel, create_model, models


def test_gateway_lists_the_models_aimodels_declare(kube: Kube, broker: Pulsar, namespace: str, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, broker.service_url, ["static-one"], UPLION_WATCH_AIMODELS="true",
                       KUBECONFIG=str(kube.kubeconfig))  # fmt: skip
    try:
        stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{gw.port}"))

        def listed() -> set[str]:
            return {m.id for m in stub.ListModels(models_pb2.ListModelsRequest(), timeout=5).data}

        assert "static-one" in listed()
        create_model(namespace, aimodel("declared", model="watched-model", replicas=0))
        eventually(lambda: "watched-model" in listed())
        assert stub.GetModel(models_pb2.GetModelRequest(id="watched-model"), timeout=5).owned_by == "aimodel"
        models().patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "declared",
                                                {"spec": {"model": "renamed-model"}})  # fmt: skip
        eventually(lambda: "renamed-model" in listed() and "watched-model" not in listed())
        models().delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "declared")
        eventually(lambda: listed() == {"static-one"} or "renamed-model" not in listed())
        assert "static-one" in listed()
        assert client.CoreV1Api().read_namespace(namespace)
    finally:
        gw.stop()
