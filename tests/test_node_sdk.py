"""Node clients against the proxy: the README's quickstart (the official `openai` npm package) and
the Vercel AI SDK's `streamText` (`ai` and `@ai-sdk/openai`), whose reported usage must equal the
event's. `npm install` runs here when a package of tests/node/package.json is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ProxyProcess
from tests.fakes import CONTENT, FakeProviders
from tests.fakes_native import (
    RESPONSES_CACHED,
    RESPONSES_INPUT,
    RESPONSES_OUTPUT,
    RESPONSES_REASONING,
)
from tests.native_expect import Expected, assert_event, rows
from tests.test_proxy_e2e import PROVIDER_KEY

NODE_DIR = Path(__file__).parent / "node"


def node() -> str:
    """The node binary, with tests/node's packages installed."""
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "the Node tests need node and npm on PATH"
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    if not all((NODE_DIR / "node_modules" / name).is_dir() for name in wanted):
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=300)
    return node


def test_node_openai_sdk_quickstart(proxy: ProxyProcess, fakes: FakeProviders, new_org: Any) -> None:
    node_bin = node()
    _, key = new_org("node")
    fakes.reset()
    env = {**os.environ, "OPENAI_API_KEY": PROVIDER_KEY, "LECTR_KEY": key, "LECTR_BASE_URL": f"{proxy.url}/v1"}
    done = subprocess.run(
        [node_bin, "quickstart.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"text": CONTENT, "streamed": CONTENT, "unauthorized": 401}
    assert fakes["openai"].received[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert fakes["anthropic"].received[-1].headers["x-api-key"] == PROVIDER_KEY


# What the Vercel AI SDK sends (`ai` 6 with `@ai-sdk/openai` 3) and the event it must leave: the
# provider's default model is the Responses API (`openai(model)`), `openai.chat(model)` is chat
# completions, for which the SDK asks for usage itself (`stream_options.include_usage`).
VERCEL = {
    "responses": Expected(
        provider="openai",
        endpoint="responses",
        stream=True,
        model="o4-mini",
        response_model="o4-mini-2025-04-16",
        input_tokens=RESPONSES_INPUT,
        output_tokens=RESPONSES_OUTPUT,
        cached_input_tokens=RESPONSES_CACHED,
        reasoning_tokens=RESPONSES_REASONING,
    ),
    "chat": Expected(
        provider="openai",
        endpoint="chat/completions",
        stream=True,
        model="gpt-4o-mini",
        response_model="gpt-4o-mini",
        input_tokens=14,
        output_tokens=6,
        cached_input_tokens=4,
        reasoning_tokens=2,
    ),
}


@pytest.mark.parametrize("mode", list(VERCEL))
def test_vercel_ai_sdk_stream_text_reports_the_events_usage(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any, mode: str
) -> None:
    node_bin = node()
    org, key = new_org("vercel")
    fakes.reset()
    env = {**os.environ, "OPENAI_API_KEY": PROVIDER_KEY, "LECTR_KEY": key, "LECTR_BASE_URL": f"{proxy.url}/v1"}
    done = subprocess.run(
        [node_bin, "vercel_ai.mjs", mode], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["text"] == CONTENT
    sent = fakes["openai"].received[-1]
    assert sent.path == f"/v1/{VERCEL[mode].endpoint}" and sent.json()["stream"] is True
    if mode == "chat":
        assert sent.json()["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in sent.json()
    [row] = rows(db, org.id, 1)
    assert_event(row, VERCEL[mode])
    assert row["feature"] == f"vercel-{mode}"
    # What the SDK told the app is what the proxy recorded.
    assert result["usage"] == {
        "inputTokens": row["input_tokens"],
        "cacheReadTokens": row["cached_input_tokens"],
        "cacheWriteTokens": None,
        "outputTokens": row["output_tokens"],
        "reasoningTokens": row["reasoning_tokens"],
        "totalTokens": row["input_tokens"] + row["output_tokens"],
    }
