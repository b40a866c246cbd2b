"""Fake providers: real HTTP servers that behave like the real APIs, recording what they receive.

One server per provider, each checking the auth header that provider expects and answering with
its error body when it is wrong, its usage quirks, and its SSE framing:

- openai / azure: `Authorization: Bearer` (azure: `api-key` and the deployment URL with
  `api-version`); `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`;
  with `stream_options.include_usage`, `"usage":null` on every chunk and a usage-only last chunk.
- anthropic (OpenAI-compatible endpoint): `x-api-key` and `anthropic-version` required; errors in
  Anthropic's `{"type":"error","error":{...}}` shape.
- groq: usage also in `x_groq.usage` of the last stream chunk, with or without the option.
- gemini: thinking tokens only visible as `total_tokens` > prompt + completion; errors as a list.

Anthropic's native `/v1/messages` and OpenAI's `/v1/responses` speak their own wire formats,
event for event: `tests/fakes_native.py`.

A test steers a fake through the `x-fake-scenario` request header (forwarded by the proxy like
any other): `error-500`, `error-429`, `slow` (sleeps past any short timeout), `reset-mid-stream`,
`slow-stream` (one chunk every 50 ms), `stall-stream` (the first chunk, then 10 s of silence),
`big-stream` (~20 MB), `gzip`. With `x-fake-fail-model: M` the scenario in
`x-fake-fail-with` (default `error-500`) applies only to requests for model M (for fallbacks).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests import fakes_native

PROVIDERS = ("openai", "anthropic", "groq", "gemini", "azure")
AZURE_DEPLOYMENT_PREFIX = "/openai/deployments/"
CONTENT = "Hello from the fake provider!"
WORDS = ["Hello", " from", " the", " fake", " provider", "!"]


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    name: str
    port: int = 0
    received: list[Received] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # request ids whose stream the client abandoned
    # The exact bytes of the last response body sent, for byte-for-byte comparisons.
    last_body: bytes = b""
    last_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        if self.name == "azure":
            return f"http://127.0.0.1:{self.port}"
        suffix = {"groq": "/openai/v1", "gemini": "/v1beta/openai"}.get(self.name, "/v1")
        return f"http://127.0.0.1:{self.port}{suffix}"

    def reset(self) -> None:
        self.received.clear()
        self.cancelled.clear()

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        request = Received(scope["method"], scope["path"], scope["query_string"].decode(), dict(raw), raw, body)
        self.received.append(request)
        status, headers, chunks = self.respond(request)
        self.last_headers = headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        scenario = request.headers.get("x-fake-scenario", "")
        finished = False

        async def watch_disconnect(cancel: trio.CancelScope) -> None:
            message = await receive()
            if message["type"] == "http.disconnect" and not finished:
                self.cancelled.append(request.headers.get("x-fake-id", scenario))
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, nursery.cancel_scope)
            self.last_body = b""
            for delay, chunk in chunks:
                if delay:
                    await trio.sleep(delay)
                if chunk is None:  # reset: drop the connection mid-stream
                    raise ConnectionResetError("fake reset")
                self.last_body += chunk  # before sending: the proxy may answer its client at once
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    # -- behaviour ----------------------------------------------------------------------

    def _auth_error(self, request: Received) -> tuple[int, bytes] | None:
        h = request.headers
        if self.name in ("openai", "groq", "gemini"):
            if not h.get("authorization", "").startswith("Bearer ") or len(h["authorization"]) < 12:
                return 401, json.dumps(
                    {
                        "error": {
                            "message": "Incorrect API key provided: sk-a***.",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    }
                ).encode()
            if "x-api-key" in h or "api-key" in h:
                return 400, b'{"error":{"message":"unexpected auth header","type":"invalid_request_error"}}'
        elif self.name == "anthropic":
            if "x-api-key" not in h or "anthropic-version" not in h or "authorization" in h:
                return 401, json.dumps(
                    {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
                ).encode()
        elif self.name == "azure":
            if "api-key" not in h or "authorization" in h:
                return 401, json.dumps(
                    {
                        "error": {
                            "code": "401",
                            "message": "Access denied due to invalid subscription key or wrong API endpoint.",
                        }
                    }
                ).encode()
            if not request.path.startswith(AZURE_DEPLOYMENT_PREFIX) or "api-version=" not in request.query:
                return 404, b'{"error":{"code":"404","message":"Resource not found"}}'
        return None

    def respond(self, request: Received) -> tuple[int, list[tuple[bytes, bytes]], Iterator[tuple[float, bytes | None]]]:
        base_headers = [
            (b"x-request-id", f"req_{self.name}_{len(self.received)}".encode()),
            (b"x-fake-provider", self.name.encode()),
            (b"date", b"Sun, 22 Nov 2026 06:00:00 GMT"),
        ]
        if self.name == "openai":
            base_headers.append((b"openai-processing-ms", b"12"))
        scenario = request.headers.get("x-fake-scenario", "")
        failing = request.headers.get("x-fake-fail-model")
        if failing and request.body and failing == json.loads(request.body).get("model"):
            scenario = request.headers.get("x-fake-fail-with", "error-500")
        failure = self._auth_error(request)
        if failure is None and scenario.startswith("error-"):
            code = int(scenario.split("-", 1)[1])
            failure = code, self._error_body(code)
        if failure is not None:
            status, payload = failure
            headers = [
                *base_headers,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            return status, headers, iter([(0.0, payload)])
        delay = 5.0 if scenario == "slow" else 0.0
        endpoint = self._endpoint(request.path)
        data = (
            request.json()
            if request.body and request.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if self.name == "anthropic" and (endpoint.startswith("messages") or endpoint == "models"):
            return fakes_native.anthropic(base_headers, endpoint, data, scenario)
        if self.name in ("openai", "azure") and endpoint == "responses":
            return fakes_native.responses(base_headers, data, scenario)
        if endpoint == "models":
            return self._json(base_headers, {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}, delay)
        if endpoint == "embeddings":
            inputs = data.get("input", "")
            n = len(inputs) if isinstance(inputs, list) else 1
            payload = {
                "object": "list",
                "model": data.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
                "usage": {"prompt_tokens": 8 * n, "total_tokens": 8 * n},
            }
            return self._json(base_headers, payload, delay)
        if endpoint in ("chat/completions", "completions"):
            if data.get("stream"):
                return self._stream(base_headers, data, endpoint, scenario)
            return self._json(base_headers, self._completion(data, endpoint), delay, gzipped=scenario == "gzip")
        return self._json(base_headers, {"echo": endpoint, "method": request.method}, delay)

    def _endpoint(self, path: str) -> str:
        if self.name == "azure":
            rest = path[len(AZURE_DEPLOYMENT_PREFIX) :] if path.startswith(AZURE_DEPLOYMENT_PREFIX) else path
            return rest.split("/", 1)[1] if "/" in rest else rest
        prefix = {"groq": "/openai/v1/", "gemini": "/v1beta/openai/"}.get(self.name, "/v1/")
        return path[len(prefix) :] if path.startswith(prefix) else path

    def _error_body(self, code: int) -> bytes:
        message = {429: "Rate limit reached for requests", 500: "The server had an error"}.get(code, "error")
        if self.name == "anthropic":
            kind = {429: "rate_limit_error", 500: "api_error"}.get(code, "api_error")
            return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
        if self.name == "gemini":
            return json.dumps([{"error": {"code": code, "message": message, "status": "UNAVAILABLE"}}]).encode()
        return json.dumps(
            {
                "error": {
                    "message": message,
                    "type": "server_error" if code >= 500 else "requests",
                    "param": None,
                    "code": None,
                }
            }
        ).encode()

    def usage(self, data: dict[str, Any]) -> dict[str, Any]:
        prompt = 11 + 3 * len(data.get("messages", []) or [])
        completion = len(WORDS)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if self.name in ("openai", "azure"):
            usage["prompt_tokens_details"] = {"cached_tokens": 4, "audio_tokens": 0}
            usage["completion_tokens_details"] = {
                "reasoning_tokens": 2,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        elif self.name == "gemini":
            usage["total_tokens"] = prompt + completion + 7  # 7 thinking tokens, reported only in the total
        elif self.name == "groq":
            usage.update({"queue_time": 0.01, "prompt_time": 0.002, "completion_time": 0.01, "total_time": 0.012})
        return usage

    def _model(self, data: dict[str, Any]) -> str:
        if self.name == "azure":
            return "gpt-4o-2024-08-06"  # Azure reports the deployment's base model, not its name
        model = data.get("model") or "unknown"
        return {"gpt-4o": "gpt-4o-2024-08-06"}.get(model, model)

    def _completion(self, data: dict[str, Any], endpoint: str) -> dict[str, Any]:
        if endpoint == "completions":
            return {
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 1763791200,
                "model": self._model(data),
                "choices": [{"text": CONTENT, "index": 0, "logprobs": None, "finish_reason": "stop"}],
                "usage": self.usage(data),
            }
        payload: dict[str, Any] = {
            "id": "chatcmpl-fake1",
            "object": "chat.completion",
            "created": 1763791200,
            "model": self._model(data),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(data),
        }
        if self.name == "openai":
            payload["system_fingerprint"] = "fp_fake"
        if self.name == "groq":
            payload["x_groq"] = {"id": "req_fake"}
        return payload

    def _json(self, headers: list[tuple[bytes, bytes]], payload: Any, delay: float, gzipped: bool = False) -> Any:
        body = json.dumps(payload, separators=(",", ":")).encode()
        extra = [(b"content-type", b"application/json")]
        if gzipped:
            body = gzip.compress(body)
            extra.append((b"content-encoding", b"gzip"))
        extra.append((b"content-length", str(len(body)).encode()))
        return 200, [*headers, *extra], iter([(delay, body)])

    def _stream(self, headers: list[tuple[bytes, bytes]], data: dict[str, Any], endpoint: str, scenario: str) -> Any:
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        model = self._model(data)
        events: list[bytes] = []

        def chunk(choices: list[Any], usage: Any = "absent", extra: dict[str, Any] | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": "chatcmpl-fake1",
                "object": "chat.completion.chunk",
                "created": 1763791200,
                "model": model,
            }
            if self.name == "openai":
                obj["system_fingerprint"] = "fp_fake"
            obj["choices"] = choices
            if extra:
                obj.update(extra)
            if usage != "absent":
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        per_chunk_usage: Any = None if include_usage else "absent"
        events.append(
            chunk(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
                per_chunk_usage,
            )
        )
        for word in WORDS:
            events.append(
                chunk(
                    [{"index": 0, "delta": {"content": word}, "logprobs": None, "finish_reason": None}], per_chunk_usage
                )
            )
        last_extra = {"x_groq": {"id": "req_fake", "usage": self.usage(data)}} if self.name == "groq" else None
        events.append(
            chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], per_chunk_usage, last_extra)
        )
        if include_usage:
            events.append(chunk([], self.usage(data)))
        events.append(b"data: [DONE]\n\n")
        step = 0.05 if scenario == "slow-stream" else 0.0
        plan: list[tuple[float, bytes | None]] = [(step, e) for e in events]
        if scenario == "reset-mid-stream":
            plan = [*plan[:3], (0.0, None)]
        if scenario == "stall-stream":  # a model "thinking" between tokens
            plan = [plan[0], (10.0, plan[1][1]), *plan[2:]]
        if scenario == "big-stream":  # ~20 MB of content chunks, as fast as the reader takes them
            filler = chunk([{"index": 0, "delta": {"content": "x" * 10_000}, "finish_reason": None}], per_chunk_usage)
            plan = [*plan[:1], *[(0.0, filler)] * 2000, *plan[1:]]
        out_headers = [
            *headers,
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        return 200, out_headers, iter(plan)


class FakeProviders:
    """All five fakes, served from one background thread with its own trio loop."""

    def __init__(self) -> None:
        self.fakes = {name: FakeProvider(name) for name in PROVIDERS}
        self._thread: threading.Thread | None = None
        self._stop: trio.Event | None = None
        self._token: Any = None
        self._ready = threading.Event()

    def __getitem__(self, name: str) -> FakeProvider:
        return self.fakes[name]

    def reset(self) -> None:
        for fake in self.fakes.values():
            fake.reset()

    def start(self) -> None:
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("fake providers did not start")

    async def _main(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            for fake in self.fakes.values():
                config = Config()
                config.bind = ["127.0.0.1:0"]
                config.accesslog = None
                config.errorlog = None
                config.include_server_header = False
                config.include_date_header = False  # the fake sends its own, like a real provider
                binds = await nursery.start(self._serve, fake, config)
                fake.port = int(binds[0].rsplit(":", 1)[1])
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @staticmethod
    async def _serve(fake: FakeProvider, config: Config, *, task_status: Any) -> None:
        await serve(fake, config, task_status=task_status)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(10)

    def env(self) -> dict[str, str]:
        return {f"LECTR_{name.upper()}_BASE_URL": self.fakes[name].base_url for name in PROVIDERS if name != "azure"}


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
