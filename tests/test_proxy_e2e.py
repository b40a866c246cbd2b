"""End to end: the official openai SDK → the proxy (Hypercorn, trio worker) → fake providers."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from proxy.store.orgs import rotate_key, set_azure
from tests.conftest import TEST_AZURE_HOSTS, ProxyProcess
from tests.fakes import CONTENT, FakeProviders, wait_for

PROVIDER_KEY = "sk-test-e2e-provider-key-1234567890"
MODELS = {
    "openai": "gpt-4o",
    "anthropic": "claude-3-5-sonnet-20241022",
    "groq": "llama-3.1-70b-versatile",
    "gemini": "gemini-1.5-pro",
    "azure": "my-gpt4o-deployment",
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def client_for(proxy: ProxyProcess, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=PROVIDER_KEY,
        base_url=f"{proxy.url}/v1",
        default_headers={"X-Lectr-Key": key, **headers},
        max_retries=0,
        timeout=20,
    )


@pytest.fixture
def org(db: Any, new_org: Any, fakes: FakeProviders) -> Any:
    """An org with an Azure endpoint pointing at the fake Azure."""
    org, key = new_org("e2e")
    set_azure(db, org.name, fakes["azure"].base_url, "2024-02-01", allowed_hosts=TEST_AZURE_HOSTS)
    fakes.reset()
    return org, key


def provider_headers(provider: str, model: str) -> dict[str, str]:
    return {"X-Lectr-Provider": "azure"} if provider == "azure" else {}


def direct_body(fakes: FakeProviders, provider: str, path: str, payload: dict[str, Any]) -> bytes:
    """What the provider sends for this exact request when called directly, without the proxy."""
    fake = fakes[provider]
    if provider == "azure":
        url = f"{fake.base_url}/openai/deployments/{payload['model']}/{path}?api-version=2024-02-01"
        headers = {"api-key": PROVIDER_KEY}
    elif provider == "anthropic":
        url, headers = f"{fake.base_url}/{path}", {"x-api-key": PROVIDER_KEY, "anthropic-version": "2023-06-01"}
    else:
        url, headers = f"{fake.base_url}/{path}", {"authorization": f"Bearer {PROVIDER_KEY}"}
    response = httpx.post(url, json=payload, headers=headers)
    fake.received.pop()
    return response.content


@pytest.mark.parametrize("provider", list(MODELS))
def test_chat_non_streaming_is_the_providers_response(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any, provider: str
) -> None:
    _, key = org
    client = client_for(proxy, key, **provider_headers(provider, MODELS[provider]))
    raw = client.chat.completions.with_raw_response.create(
        model=MODELS[provider],
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Lectr-Feature": "e2e-chat", "X-Lectr-Task": "classification"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == CONTENT
    fake = fakes[provider]
    # Body identical, byte for byte; the provider's headers all present; nothing added.
    assert raw.http_response.content == fake.last_body
    sent = [(k.decode(), v.decode()) for k, v in fake.last_headers if k.decode() not in HOP_BY_HOP]
    got = [
        (k.decode().lower(), v.decode())
        for k, v in raw.http_response.headers.raw
        if k.decode().lower() not in HOP_BY_HOP
    ]
    assert sorted(got) == sorted(sent)
    # What the provider received: its own auth header, no Lectr headers.
    received = fake.received[-1]
    names = {name.lower() for name, _ in received.raw_headers}
    assert not any(name.startswith("x-lectr-") for name in names)
    if provider in ("openai", "groq", "gemini"):
        assert received.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    elif provider == "anthropic":
        assert received.headers["x-api-key"] == PROVIDER_KEY
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in names
    else:
        assert received.headers["api-key"] == PROVIDER_KEY and "authorization" not in names
        assert received.path == f"/openai/deployments/{MODELS['azure']}/chat/completions"
        assert received.query == "api-version=2024-02-01"
    assert received.json()["model"] == MODELS[provider]


@pytest.mark.parametrize("provider", list(MODELS))
def test_chat_streaming_is_byte_identical_without_usage_option(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any, provider: str
) -> None:
    _, key = org
    payload = {"model": MODELS[provider], "messages": [{"role": "user", "content": "hi"}], "stream": True}
    expected = direct_body(fakes, provider, "chat/completions", payload)
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **provider_headers(provider, "")}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=payload, headers=headers) as response:
        assert response.status_code == 200
        got = b"".join(response.iter_raw())
    assert got == expected
    assert b'"usage"' not in got or provider == "groq"  # Groq always sends x_groq.usage
    # Upstream was asked for usage, so the event can be exact.
    assert fakes[provider].received[-1].json()["stream_options"] == {"include_usage": True}
    # And the SDK reads the stream as usual.
    client = client_for(proxy, key, **provider_headers(provider, ""))
    stream = client.chat.completions.create(
        model=MODELS[provider], messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == CONTENT


@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_streaming_with_usage_requested_passes_through(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any, provider: str
) -> None:
    _, key = org
    payload = {
        "model": MODELS[provider],
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    expected = direct_body(fakes, provider, "chat/completions", payload)
    client = client_for(proxy, key)
    chunks = list(
        client.chat.completions.create(
            model=MODELS[provider], messages=payload["messages"], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 14
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    got = httpx.post(f"{proxy.url}/v1/chat/completions", json=payload, headers=headers).content
    assert got == expected


def test_embeddings_completions_models_and_other_paths(proxy: ProxyProcess, fakes: FakeProviders, org: Any) -> None:
    _, key = org
    client = client_for(proxy, key)
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens == 16
    comp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert comp.choices[0].text == CONTENT
    models = client.models.list()
    assert [m.id for m in models.data] == ["gpt-4o"]
    other = httpx.get(
        f"{proxy.url}/v1/files?purpose=batch", headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    )
    assert other.status_code == 200 and other.json() == {"echo": "files", "method": "GET"}
    assert fakes["openai"].received[-1].query == "purpose=batch"
    groq_models = httpx.get(
        f"{proxy.url}/v1/models",
        headers={"X-Lectr-Key": key, "X-Lectr-Provider": "groq", "Authorization": f"Bearer {PROVIDER_KEY}"},
    )
    assert groq_models.status_code == 200 and fakes["groq"].received[-1].path == "/openai/v1/models"


@pytest.mark.parametrize(
    "key_kind",
    ["missing", "unknown", "malformed"],
)
def test_bad_org_key_is_401_and_never_reaches_a_provider(
    proxy: ProxyProcess, fakes: FakeProviders, key_kind: str
) -> None:
    fakes.reset()
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}"}
    if key_kind == "unknown":
        headers["X-Lectr-Key"] = "lc_key_" + "x" * 32
    elif key_kind == "malformed":
        headers["X-Lectr-Key"] = "nonsense"
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": []}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "authentication_error"
    assert PROVIDER_KEY not in response.text
    assert all(not fake.received for fake in fakes.fakes.values())


def test_openai_sdk_sees_401_as_authentication_error(proxy: ProxyProcess, fakes: FakeProviders) -> None:
    fakes.reset()
    with pytest.raises(openai.AuthenticationError):
        client_for(proxy, "lc_key_wrong").chat.completions.create(model="gpt-4o", messages=[])
    assert not fakes["openai"].received


def test_revoked_key_stops_working_within_5_seconds(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any
) -> None:
    org, key = new_org("revoke")
    client = client_for(proxy, key)
    client.models.list()  # works
    new_key = rotate_key(db, org.name)
    revoked_at = time.monotonic()

    def rejected() -> bool:
        return httpx.get(f"{proxy.url}/v1/models", headers={"X-Lectr-Key": key}).status_code == 401

    wait_for(rejected, timeout=5)
    assert time.monotonic() - revoked_at < 5
    client_for(proxy, new_key).models.list()


def test_azure_without_endpoint_is_400_with_instructions_and_works_once_set(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any
) -> None:
    org, key = new_org("noazure")
    fakes.reset()
    client = client_for(proxy, key, **{"X-Lectr-Provider": "azure"})
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=messages)
    body = caught.value.response.json()
    assert "lectr org azure" in body["error"]["message"]
    assert all(not fake.received for fake in fakes.fakes.values())

    # The key is known to the proxy now; the endpoint set next must work on the very next request,
    # not after the next periodic reload (2 s).
    set_azure(db, org.name, fakes["azure"].base_url, "2024-02-01", allowed_hosts=TEST_AZURE_HOSTS)
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert reply.choices[0].message.content == CONTENT
    assert fakes["azure"].received[-1].path.startswith("/openai/deployments/gpt-4o/chat/completions")


@pytest.mark.parametrize(
    ("model", "header", "provider"),
    [
        ("gpt-4o-mini", None, "openai"),
        ("o3-mini", None, "openai"),
        ("text-embedding-3-large", None, "openai"),
        ("claude-3-opus-20240229", None, "anthropic"),
        ("llama-3.1-8b-instant", None, "groq"),
        ("meta-llama/llama-4-scout-17b-16e-instruct", None, "groq"),
        ("openai/gpt-oss-120b", None, "groq"),
        ("gemini-2.0-flash", None, "gemini"),
        ("my-custom-model", None, "openai"),
        ("my-custom-model", "anthropic", "anthropic"),
        ("gpt-4o", "groq", "groq"),
        ("gpt-4o", "not-a-provider", "openai"),
    ],
)
def test_detection_and_override(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any, model: str, header: str | None, provider: str
) -> None:
    _, key = org
    extra = {"X-Lectr-Provider": header} if header else {}
    client = client_for(proxy, key, **extra)
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert [name for name, fake in fakes.fakes.items() if fake.received] == [provider]


def test_client_disconnect_cancels_upstream(proxy: ProxyProcess, fakes: FakeProviders, org: Any) -> None:
    _, key = org
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {
        "X-Lectr-Key": key,
        "Authorization": f"Bearer {PROVIDER_KEY}",
        "x-fake-scenario": "slow-stream",
        "x-fake-id": "disconnect-1",
    }
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=payload, headers=headers) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"data: ")
    wait_for(lambda: "disconnect-1" in fakes["openai"].cancelled, timeout=5)


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "malformed_json"),
        (b'["a list"]', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"messages": []}', {"content-type": "application/json"}, 400, "missing_model"),
        (b'{"model": 42}', {"content-type": "application/json"}, 400, "missing_model"),
        (b'{"model": "gpt-4o", "x": "\xff\xfe"}', {"content-type": "application/json"}, 400, "malformed_json"),
        (b"x" * (2 * 1024 * 1024), {"content-type": "application/json"}, 413, "payload_too_large"),
        (
            b'{"model": "gpt-4o"}',
            {"content-type": "application/json", "x-lectr-feature": "f" * 20000},
            431,
            "header_too_large",
        ),
    ],
)
def test_bad_input_gets_clear_json_errors(
    proxy: ProxyProcess, fakes: FakeProviders, org: Any, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    _, key = org
    fakes.reset()
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        content=body,
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **headers},
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert not fakes["openai"].received


@pytest.mark.parametrize("path", ["/", "/v2/chat/completions", "/nope", "/v1"])
def test_unknown_path_is_404_json(proxy: ProxyProcess, path: str) -> None:
    response = httpx.post(f"{proxy.url}{path}", json={"model": "gpt-4o"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_upstream_timeout_is_504(proxy: ProxyProcess, fakes: FakeProviders, org: Any) -> None:
    _, key = org
    client = client_for(proxy, key, **{"x-fake-scenario": "slow"})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 504
    assert caught.value.response.json()["error"]["code"] == "gateway_timeout"


def test_unreachable_upstream_is_502(proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any) -> None:
    from tests.conftest import free_port

    org, key = new_org("unreachable")
    set_azure(db, org.name, f"http://127.0.0.1:{free_port()}", allowed_hosts=TEST_AZURE_HOSTS)
    client = client_for(proxy, key, **{"X-Lectr-Provider": "azure"})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    body = caught.value.response.json()
    assert body["error"]["code"] == "bad_gateway" and PROVIDER_KEY not in json.dumps(body)


def test_provider_errors_reach_the_client_unchanged(proxy: ProxyProcess, fakes: FakeProviders, org: Any) -> None:
    _, key = org
    for provider, model in (
        ("openai", "gpt-4o"),
        ("anthropic", "claude-3-5-haiku-latest"),
        ("gemini", "gemini-2.0-flash"),
    ):
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": model, "messages": []},
            headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "error-429"},
        )
        assert response.status_code == 429
        assert response.content == fakes[provider].last_body


def test_gzip_response_passes_through(proxy: ProxyProcess, fakes: FakeProviders, org: Any) -> None:
    _, key = org
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={
            "X-Lectr-Key": key,
            "Authorization": f"Bearer {PROVIDER_KEY}",
            "x-fake-scenario": "gzip",
            "accept-encoding": "gzip, br",
        },
    )
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["choices"][0]["message"]["content"] == CONTENT
    # br is not something we can read usage from, so upstream was offered gzip only.
    assert fakes["openai"].received[-1].headers["accept-encoding"] == "gzip"


def test_hypercorns_own_http1_code_still_serves_the_proxy(
    pg_url: str, fakes: FakeProviders, org: Any, tmp_path: Any
) -> None:
    """`LECTR_HTTP1=hypercorn` (the off switch for proxy/http/server.py): the same answers, byte for byte,
    with Hypercorn's own protocol code and the disconnect watcher on every request."""
    from tests.conftest import proxy_env

    _, key = org
    server = ProxyProcess(proxy_env(pg_url, fakes, tmp_path, LECTR_HTTP1="hypercorn"), tmp_path / "proxy.log").start()
    try:
        client = client_for(server, key)
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == CONTENT
        assert httpx.post(f"{server.url}/v1/chat/completions", json={}).status_code == 401
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == CONTENT
        raw = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"},
        )
        assert raw.content == fakes["openai"].last_body and "server" not in raw.headers
        # Which code answered: Hypercorn's h11 sends no reason phrase, proxy/http/server.py sends "OK".
        assert raw.reason_phrase == ""
        assert httpx.get(f"{server.url}/healthz").reason_phrase == ""
    finally:
        server.stop()
