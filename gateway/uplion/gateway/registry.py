"""Which models exist: configured ones (UPLION_MODELS) and, in a cluster, those AIModel resources
declare (model_watch.py keeps them current)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from uplion.core.aimodels import ModelLimits
from uplion.v1 import models_pb2


@dataclass
class ModelRegistry:
    models: dict[str, models_pb2.Model] = field(default_factory=dict)

    @classmethod
    def static(cls, names: tuple[str, ...], owner: str = "uplion") -> ModelRegistry:
        created = int(time.time())
        return cls({n: models_pb2.Model(id=n, object="model", created=created, owned_by=owner) for n in names})

    declared: dict[str, set[str]] = field(default_factory=dict)  # model -> AIModel resources naming it
    limits: dict[str, ModelLimits] = field(default_factory=dict)  # model -> its AIModel's limits
    default_limits: ModelLimits = field(default_factory=ModelLimits)  # models of the static configuration

    def declare(self, resource: str, model: str | None, limits: ModelLimits | None = None) -> None:
        """`resource` (namespace/name) now serves `model` with `limits` (None: it was deleted).
        A model stays listed while any resource or the static configuration names it."""
        for name, owners in list(self.declared.items()):
            owners.discard(resource)
            if not owners:
                del self.declared[name]
                self.limits.pop(name, None)
                if self.models.get(name) is not None and self.models[name].owned_by == "aimodel":
                    del self.models[name]
        if model:
            if limits is not None:
                self.limits[model] = limits
            self.declared.setdefault(model, set()).add(resource)
            if model not in self.models:
                self.models[model] = models_pb2.Model(id=model, object="model", created=int(time.time()),
                                                      owned_by="aimodel")  # fmt: skip

    def limits_for(self, name: str) -> ModelLimits:
        return self.limits.get(name, self.default_limits)

    def get(self, name: str) -> models_pb2.Model | None:
        return self.models.get(name)

    def list(self) -> list[models_pb2.Model]:
        return [self.models[k] for k in sorted(self.models)]
