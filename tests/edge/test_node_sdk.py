"""The official openai Node SDK suite (tests/node) against the same edge."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from uplion.devstack.node import link_project

from .conftest import Edge

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_openai_node_sdk_suite(base_url: str, edge: Edge, tmp_path: Path) -> None:
    suite = link_project(NODE_DIR, tmp_path / "node")  # Node.js 20+ is a prerequisite: fails saying so
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "UPLION_MODEL": "edge-echo",
        "OPENAI_API_KEY": edge.api_key,
    }
    out = subprocess.run(
        ["node", "--test", "sdk.test.mjs"], cwd=suite, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# fail 0" in out.stdout
    assert "# pass 7" in out.stdout
