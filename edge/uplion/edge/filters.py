"""The edge's HTTP filter chain as data: one source for the local Envoy and the Istio EnvoyFilters."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

TRANSCODED_SERVICES = ["uplion.v1.InferenceService"]
MAX_BODY_BYTES = 8 * 1024 * 1024


def lua_source() -> str:
    return resources.files("uplion.edge").joinpath("openai_edge.lua").read_text()


@dataclass(frozen=True)
class Descriptor:
    """Where Envoy reads the descriptor set: a file path (local) or inline bytes (Istio)."""

    path: str | None = None
    inline_b64: str | None = None

    def as_config(self) -> dict[str, str]:
        if self.path:
            return {"proto_descriptor": self.path}
        if self.inline_b64:
            return {"proto_descriptor_bin": self.inline_b64}
        raise ValueError("descriptor needs a path or inline bytes")


def lua_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": lua_source()},
        },
    }


def transcoder_filter(descriptor: Descriptor) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            **descriptor.as_config(),
            "services": TRANSCODED_SERVICES,
            "print_options": {
                "preserve_proto_field_names": True,
                "always_print_primitive_fields": True,
                "stream_sse_style_delimited": True,
            },
            "convert_grpc_status": True,
            "max_request_body_size": MAX_BODY_BYTES,
            "request_validation_options": {"reject_unknown_method": True},
        },
    }


def router_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def edge_filters(descriptor: Descriptor) -> list[dict[str, Any]]:
    """Order matters: Lua sees requests before the transcoder and responses after it."""
    return [lua_filter(), transcoder_filter(descriptor)]
