"""The official openai Node SDK suite (tests/node) against the same edge."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Edge

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_openai_node_sdk_suite(base_url: str, edge: Edge) -> None:
    if not (NODE_DIR / "node_modules" / "openai").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=300)
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "UPLION_MODEL": "edge-echo",
        "OPENAI_API_KEY": edge.api_key,
    }
    out = subprocess.run(
        ["node", "--test", "sdk.test.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# fail 0" in out.stdout
    assert "# pass 7" in out.stdout
