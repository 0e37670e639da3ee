"""The Node suites (tests/node) against the same edge: the official openai Node SDK, and the Vercel
AI SDK (`ai` with `@ai-sdk/openai`) through chat completions and through the Responses API."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from uplion.devstack.node import link_project, node_binary

from .conftest import Edge

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
AI_SDK_NODE = 22  # the AI SDK 7 (`ai`, `@ai-sdk/*`) supports Node.js 22 and newer


def run_suite(
    suite: Path, script: str, node: Path | str, base_url: str, edge: Edge, **extra_env: str
) -> tuple[int, int, str]:
    """Run one node:test file against the edge: (passed, failed, its failing tests and whole output)."""
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "UPLION_MODEL": "edge-echo",
        "OPENAI_API_KEY": edge.api_key,
        **extra_env,
    }
    out = subprocess.run(
        [str(node), "--test", "--test-reporter=tap", script],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    failing = re.findall(r"^\s*not ok \d+ - (.*)$", out.stdout, re.MULTILINE)
    log = f"failing: {failing}\n{out.stdout}{out.stderr}"
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail) (\d+)$", out.stdout, re.MULTILINE)}
    assert set(counts) == {"pass", "fail"}, log  # the runner got to its summary
    assert (out.returncode == 0) == (counts["fail"] == 0), log
    return counts["pass"], counts["fail"], log


def test_openai_node_sdk_suite(base_url: str, edge: Edge, tmp_path: Path) -> None:
    """Chat, completions, embeddings, models and errors, then the Responses API: create, stream (event
    order, final response), a function call round trip, a `previous_response_id` chain, retrieve and
    delete, and another member's key refused (404) on this member's response."""
    suite = link_project(NODE_DIR, tmp_path / "node")  # Node.js 20+ is a prerequisite: fails saying so
    _, _, other_key = edge.new_key()  # a second member, who must not see the first one's responses
    passed, failed, log = run_suite(suite, "sdk.test.mjs", "node", base_url, edge, UPLION_OTHER_API_KEY=other_key)
    assert (passed, failed) == (13, 0), log


def test_vercel_ai_sdk_suite(base_url: str, edge: Edge, tmp_path: Path) -> None:
    """generateText, streamText, a forced tool call and a streamed forced tool call, each through
    `openai.chat(model)` and through `openai(model)` (the Responses API, the provider's default)."""
    suite = link_project(NODE_DIR, tmp_path / "node")
    node = node_binary(AI_SDK_NODE)  # the node on PATH when it is 22+, else Node.js 22 from the npm registry
    passed, failed, log = run_suite(suite, "ai-sdk.test.mjs", node, base_url, edge)
    assert (passed, failed) == (8, 0), log
