"""The gateway's dispatcher makes a model's subscription once, not per task (a regression once
made it subscribe and close a consumer on every request). The Pulsar client here is a recorder:
the broker's behaviour is tested in tests/spine; this checks only what the dispatcher asks of it."""

from __future__ import annotations

from typing import Any

from uplion.core.topics import Topics
from uplion.gateway.dispatcher import Dispatcher
from uplion.v1 import task_pb2


class _Recorder:
    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.producers: list[tuple[str, dict[str, Any]]] = []
        self.sent: list[bytes] = []

    async def subscribe(self, topic: str, subscription: str, **_: Any) -> _Recorder:
        self.subscribed.append(subscription)
        return self

    async def close(self) -> None:
        return None

    async def create_producer(self, topic: str, **options: Any) -> _Recorder:
        self.producers.append((topic, options))
        return self

    async def send(self, data: bytes, **_: Any) -> None:
        self.sent.append(data)


async def test_a_model_is_subscribed_once_and_its_producer_reused() -> None:
    client = _Recorder()
    dispatcher = Dispatcher(client, Topics(), "gw-1", publish_timeout_s=2.0)
    for i in range(5):
        await dispatcher.publish_task(task_pb2.Task(task_id=f"t{i}", model="m"))
    assert client.subscribed == ["model-m-subscription"]
    assert len(client.producers) == 1
    assert client.producers[0][1]["send_timeout_millis"] == 2000
    assert client.producers[0][1]["batching_enabled"] is False
    assert len(client.sent) == 5
