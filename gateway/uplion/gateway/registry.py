"""Which models exist. Statically configured here; the operator issue adds AIModel watching."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from uplion.v1 import models_pb2


@dataclass
class ModelRegistry:
    models: dict[str, models_pb2.Model] = field(default_factory=dict)

    @classmethod
    def static(cls, names: tuple[str, ...], owner: str = "uplion") -> ModelRegistry:
        created = int(time.time())
        return cls({n: models_pb2.Model(id=n, object="model", created=created, owned_by=owner) for n in names})

    def get(self, name: str) -> models_pb2.Model | None:
        return self.models.get(name)

    def list(self) -> list[models_pb2.Model]:
        return [self.models[k] for k in sorted(self.models)]
