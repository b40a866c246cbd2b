"""The README's Node quickstart, with the official `openai` npm package, against the proxy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ProxyProcess
from tests.fakes import CONTENT, FakeProviders
from tests.test_proxy_e2e import PROVIDER_KEY

NODE_DIR = Path(__file__).parent / "node"


def test_node_openai_sdk_quickstart(proxy: ProxyProcess, fakes: FakeProviders, new_org: Any) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "the Node quickstart test needs node and npm on PATH"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=300)
    _, key = new_org("node")
    fakes.reset()
    env = {**os.environ, "OPENAI_API_KEY": PROVIDER_KEY, "LECTR_KEY": key, "LECTR_BASE_URL": f"{proxy.url}/v1"}
    done = subprocess.run([node, "quickstart.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"text": CONTENT, "streamed": CONTENT, "unauthorized": 401}
    assert fakes["openai"].received[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert fakes["anthropic"].received[-1].headers["x-api-key"] == PROVIDER_KEY
