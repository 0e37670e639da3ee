"""Which models exist: configured ones (UPLION_MODELS) and, in a cluster, those AIModel resources
declare (model_watch.py keeps them current); and which of them forward request members the contract
does not name (backend type `remote`: an AIModel's spec.type, or UPLION_REMOTE_MODELS)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from uplion.core.aimodels import REMOTE_RESPONSES, ModelLimits
from uplion.v1 import models_pb2


@dataclass
class ModelRegistry:
    models: dict[str, models_pb2.Model] = field(default_factory=dict)

    @classmethod
    def static(cls, names: tuple[str, ...], owner: str = "uplion", remote: tuple[str, ...] = (),
               responses: tuple[str, ...] = ()) -> ModelRegistry:  # fmt: skip
        created = int(time.time())
        models = {n: models_pb2.Model(id=n, object="model", created=created, owned_by=owner) for n in names}
        return cls(models, static_remote=frozenset(remote) | frozenset(responses),
                   static_responses=frozenset(responses))  # fmt: skip

    declared: dict[str, set[str]] = field(default_factory=dict)  # model -> AIModel resources naming it
    limits: dict[str, ModelLimits] = field(default_factory=dict)  # model -> its AIModel's limits
    default_limits: ModelLimits = field(default_factory=ModelLimits)  # models of the static configuration
    static_remote: frozenset[str] = frozenset()  # models of the static configuration a remote backend serves
    static_responses: frozenset[str] = frozenset()  # ... whose remote upstream serves /v1/responses itself
    types: dict[str, str] = field(default_factory=dict)  # resource -> the backend type it declares

    def declare(self, resource: str, model: str | None, limits: ModelLimits | None = None, backend: str = "") -> None:
        """`resource` (namespace/name) now serves `model` with `limits` on a `backend` of that type
        (None: it was deleted). A model stays listed while any resource or the static configuration
        names it."""
        self.types.pop(resource, None)
        if model:
            self.types[resource] = backend
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

    def forwards_unknown(self, name: str) -> bool:
        """Whether every backend that may take `name`'s tasks forwards request members the contract
        does not name to its upstream (only `remote` does): the resources declaring it, else the static
        configuration."""
        owners = self.declared.get(name)
        if owners:
            return all(self.types.get(r) in ("remote", REMOTE_RESPONSES) for r in owners)
        return name in self.static_remote

    def serves_responses(self, name: str) -> bool:
        """Whether every backend that may take `name`'s tasks is a remote upstream serving the
        Responses API itself (then Responses requests are passed through, not bridged)."""
        owners = self.declared.get(name)
        if owners:
            return all(self.types.get(r) == REMOTE_RESPONSES for r in owners)
        return name in self.static_responses

    def limits_for(self, name: str) -> ModelLimits:
        return self.limits.get(name, self.default_limits)

    def get(self, name: str) -> models_pb2.Model | None:
        return self.models.get(name)

    def list(self) -> list[models_pb2.Model]:
        return [self.models[k] for k in sorted(self.models)]
