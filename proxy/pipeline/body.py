"""What the proxy needs from a request body (model, stream, usage option), and the edits it makes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from proxy.core.errors import MalformedJSON, MissingModel
from proxy.pipeline.headers import END_USER_CHARS

# Endpoints whose JSON body must name a model.
MODEL_REQUIRED = frozenset({"chat/completions", "completions", "embeddings"})
# Endpoints that stream usage only when `stream_options.include_usage` is set.
USAGE_OPTION = frozenset({"chat/completions", "completions"})


@dataclass(slots=True)
class RequestInfo:
    data: dict[str, Any] | None = None
    model: str | None = None
    stream: bool = False
    # The client did not ask for usage in its stream: we ask upstream and strip it on the way back.
    add_usage_option: bool = False
    message_count: int | None = None
    # The body's own end user: OpenAI's `user`, Anthropic's `metadata.user_id` (SPEC §3).
    end_user: str | None = None


def inspect(body: bytes, content_type: bytes, endpoint: str) -> RequestInfo:
    """Parse a JSON body once. Raises MalformedJSON / MissingModel for what the provider would refuse."""
    is_json = b"json" in content_type.lower() or (endpoint in MODEL_REQUIRED and not content_type)
    if not is_json or (not body and endpoint not in MODEL_REQUIRED):
        return RequestInfo()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the request body is not valid JSON ({exc.msg} at byte {exc.pos})") from None
    if not isinstance(data, dict):
        raise MalformedJSON("the request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        if endpoint in MODEL_REQUIRED:
            raise MissingModel("the request body needs a `model` (a non-empty string)")
        model = None
    info = RequestInfo(data=data, model=model, stream=data.get("stream") is True)
    messages = data.get("messages")
    if isinstance(messages, list):
        info.message_count = len(messages)
    elif endpoint == "completions" and "prompt" in data:
        prompt = data["prompt"]
        info.message_count = len(prompt) if isinstance(prompt, list) else 1
    info.end_user = _end_user(data)
    if info.stream and endpoint in USAGE_OPTION:
        options = data.get("stream_options")
        info.add_usage_option = not (isinstance(options, dict) and options.get("include_usage") is True)
    return info


def _end_user(data: dict[str, Any]) -> str | None:
    """OpenAI's `user`, else Anthropic's `metadata.user_id`: a non-empty string, cut to 200 characters."""
    user = data.get("user")
    if not isinstance(user, str) or not user:
        metadata = data.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user[:END_USER_CHARS] if isinstance(user, str) and user else None


def with_usage_option(body: bytes, info: RequestInfo) -> bytes:
    """The body with `stream_options.include_usage` set, touching as few bytes as possible."""
    assert info.data is not None
    if "stream_options" not in info.data:
        start = body.index(b"{") + 1
        return body[:start] + b'"stream_options":{"include_usage":true},' + body[start:]
    return orjson.dumps(_asking_usage(dict(info.data)))


def _asking_usage(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with `stream_options.include_usage` set, keeping the client's other stream options."""
    options = data.get("stream_options")
    data["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return data


def with_model(info: RequestInfo, model: str, add_usage_option: bool) -> bytes:
    """The body re-serialised with another model (routing), keeping the usage option if we add it."""
    assert info.data is not None
    data = dict(info.data)
    data["model"] = model
    return orjson.dumps(_asking_usage(data) if add_usage_option else data)
