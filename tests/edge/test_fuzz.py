"""A bounded schemathesis run over the REST surface, from the generated OpenAPI document:
no 5xx that is not deliberate (the echo model never fails unless told to)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from .conftest import Edge

OPENAPI = Path(__file__).resolve().parents[2] / "gen" / "openapi" / "uplion.openapi.json"
EXAMPLES_PER_OPERATION = 40


def test_rest_surface_has_no_unintended_server_errors(base_url: str, edge: Edge) -> None:
    # a key of its own: the fuzzer's huge max_tokens reserve much of a key's tokens-per-minute
    auth = {"authorization": f"Bearer {edge.new_key()[2]}"}
    raw = json.loads(OPENAPI.read_text())
    # aim the requests at the model the edge stack serves, so they reach a real worker
    for name in ("ChatCompletionRequest", "CompletionRequest", "EmbeddingRequest", "CreateResponseRequest"):
        raw["components"]["schemas"][name]["properties"]["model"] = {"enum": ["edge-echo"]}
    schema = schemathesis.openapi.from_dict(raw)
    schema.config.update(base_url=base_url)
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)  # fmt: skip
        def run(case: Any) -> None:
            response = case.call(timeout=30, headers={"x-uplion-timeout": "20", **auth})
            statuses.setdefault(case.operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        run()
    # chat, completions, embeddings, the model list and one model, and the Responses API's four
    assert len(statuses) == 9, sorted(statuses)
    assert any(200 in s for s in statuses.values())  # the fuzzer reached real answers, not only errors
