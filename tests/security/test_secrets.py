"""Secrets: provider keys are never stored, logged or echoed by the proxy; org keys are stored hashed.

Every path a request can take is driven with one unique provider key (success, streams, provider
4xx/401, Lectr's own 401, timeouts, bad input, Azure without an endpoint, routing to another
provider with `X-Lectr-Auth-<Provider>`), then the proxy's whole log and a dump of every table in
the public schema are searched for the key, for its halves, and for the org key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from proxy.pipeline import directory
from proxy.store.db import connect
from proxy.store.orgs import OrgError, create_org, hash_key, set_azure
from proxy.store.rules import add_rule
from tests.conftest import TEST_AZURE_HOSTS, ProxyProcess, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.security.conftest import rows, unique

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _dump_all_tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
    assert "events" in tables or any(t.startswith("events_") for t in tables)
    return {table: repr(conn.execute(f'SELECT * FROM "{table}"').fetchall()) for table in tables}  # type: ignore[arg-type]


def _assert_nowhere(secret: str, where: dict[str, str]) -> None:
    """Neither the secret nor a recognisable half of it appears in any of the texts."""
    pieces = [secret, secret[: len(secret) // 2], secret[len(secret) // 2 :]]
    for name, text in where.items():
        for piece in pieces:
            assert piece not in text, f"{piece!r} found in {name}"


def _scan(proxy: ProxyProcess, pg_url: str, secrets: list[str]) -> None:
    with connect(pg_url) as conn:
        texts = _dump_all_tables(conn)
    texts["proxy log"] = proxy.logs()
    for secret in secrets:
        _assert_nowhere(secret, texts)


def test_provider_key_never_stored_logged_or_echoed(
    proxy: ProxyProcess, fakes: FakeProviders, pg_url: str, db: Any, new_org: Any
) -> None:
    org, org_key = new_org("secrets")
    azure_org, azure_key = new_org("secrets-azure")  # no Azure endpoint configured
    provider_key = f"sk-proj-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
    groq_key = f"gsk_{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
    feature = unique("secret-paths")
    add_rule(db, org.name, to_model="llama-3.1-8b-instant", to_provider="groq", feature=f"{feature}-route")
    # Our rule must be loaded by the worker before the routed request (refresh every 0.5 s here).
    base = {"X-Lectr-Key": org_key, "Authorization": f"Bearer {provider_key}", "X-Lectr-Feature": feature}
    own_errors: list[bytes] = []
    fakes.reset()
    with httpx.Client(base_url=proxy.url, timeout=30) as client:

        def post(json_body: Any = None, content: bytes | None = None, **headers: str) -> httpx.Response:
            return client.post("/v1/chat/completions", json=json_body, content=content, headers={**base, **headers})

        assert post(CHAT).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=base) as r:
            assert r.status_code == 200 and b"[DONE]" in r.read()
        claude = {"model": "claude-3-5-haiku-latest", "messages": CHAT["messages"], "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=claude, headers=base) as r:
            assert r.status_code == 200 and b"[DONE]" in r.read()
        assert post({**CHAT, "model": "gemini-1.5-flash"}).status_code == 200
        emb = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=base)
        assert emb.status_code == 200
        assert post(CHAT, **{"x-fake-scenario": "error-429"}).status_code == 429
        assert post(CHAT, **{"x-fake-scenario": "error-401"}).status_code == 401
        assert post(CHAT, **{"x-fake-scenario": "error-500"}).status_code == 500
        assert post(CHAT, **{"x-fake-scenario": "slow"}).status_code == 504
        # A provider refusing the key itself (the fake checks the bearer's shape).
        assert post(CHAT, Authorization="Bearer k").status_code == 401
        # Lectr's own errors, each with the provider key on the request.
        for response in (
            post(CHAT, **{"X-Lectr-Key": "lc_key_" + "x" * 32}),  # unknown org key
            post(content=b'{"model": "' + provider_key.encode() + b'", broken', **{"content-type": "application/json"}),
            post({"messages": []}),  # missing model
            client.post(
                "/v1/chat/completions",
                json={**CHAT, "model": "my-deployment"},
                headers={
                    "X-Lectr-Key": azure_key,
                    "Authorization": f"Bearer {provider_key}",
                    "X-Lectr-Provider": "azure",
                },
            ),
            post(CHAT, **{"X-Lectr-Task": "t" * 20_000}),  # header too large
        ):
            assert 400 <= response.status_code < 500
            own_errors.append(response.content)
        # Routing to another provider with its own key; the openai key must not follow it.
        wait_for(
            lambda: (
                post(
                    {**CHAT, "model": "gpt-4o-mini"},
                    **{"X-Lectr-Feature": f"{feature}-route", "X-Lectr-Auth-Groq": f"Bearer {groq_key}"},
                ).headers.get("x-fake-provider")
                == "groq"
            ),
            timeout=15,
        )
        # A client that disconnects mid-stream.
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={**base, "x-fake-scenario": "slow-stream"},
        ) as r:
            next(r.iter_raw())
    for body in own_errors:
        text = body.decode("utf-8", "replace")
        assert provider_key not in text and provider_key[8:20] not in text and org_key not in text, text
        assert json.loads(body)["error"]["message"]
    # The openai key only ever went to providers reached with it, never to groq.
    for received in fakes["groq"].received:
        assert provider_key not in json.dumps(received.headers)
    assert any(groq_key in r.headers.get("authorization", "") for r in fakes["groq"].received)
    with connect(pg_url) as conn:
        wait_for(
            lambda: len(rows(conn, "SELECT 1 FROM events WHERE starts_with(feature, %s)", (feature,))) >= 14, timeout=20
        )
    _scan(proxy, pg_url, [provider_key, groq_key, org_key, azure_key])
    assert azure_org.id != org.id


# -- a provider that echoes the key in its error message ----------------------------------


class _EchoingProvider(BaseHTTPRequestHandler):
    """Answers 401 with the presented key in the message, as some gateways do."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        payload = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {token}. Check it.", "type": "invalid_request_error"}}
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_proxy(tmp_path: Path, pg_url: str, fakes: FakeProviders) -> Iterator[ProxyProcess]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = proxy_env(pg_url, fakes, tmp_path, LECTR_OPENAI_BASE_URL=f"http://127.0.0.1:{server.server_port}/v1")
    proxy = ProxyProcess(env, tmp_path / "proxy.log").start()
    yield proxy
    proxy.stop()
    server.shutdown()


@pytest.mark.parametrize(
    "provider_key",
    [
        pytest.param(f"sk-proj-{uuid.uuid4().hex}", id="openai-shaped"),
        pytest.param(f"{uuid.uuid4().hex[:12]}.{uuid.uuid4().hex[:12]}", id="gateway-shaped"),
    ],
)
def test_provider_error_echoing_the_key_is_stored_without_it(
    echoing_proxy: ProxyProcess, pg_url: str, new_org: Any, provider_key: str
) -> None:
    """The client gets the provider's answer unchanged (its own key, its own business), but the
    event's `error_message` and the logs must not keep the key, whatever its shape: the proxy
    knows the exact key of the request and can remove it, not only key-shaped strings."""
    org, org_key = new_org("echo")
    response = httpx.post(
        f"{echoing_proxy.url}/v1/chat/completions",
        json=CHAT,
        headers={"X-Lectr-Key": org_key, "Authorization": f"Bearer {provider_key}"},
    )
    assert response.status_code == 401 and provider_key in response.text  # relayed unchanged
    with connect(pg_url) as conn:
        wait_for(lambda: rows(conn, "SELECT 1 FROM events WHERE org_id = %s", (org.id,)), timeout=15)
        (event,) = rows(conn, "SELECT error_message FROM events WHERE org_id = %s", (org.id,))
    assert event["error_message"] and "Incorrect API key provided" in event["error_message"]
    _scan(echoing_proxy, pg_url, [provider_key, org_key])


def test_org_keys_are_stored_as_sha256_hashes_only(db: Any) -> None:
    org, key = create_org(db, unique("hashed"))
    stored = rows(db, "SELECT key_hash, key_prefix FROM org_keys WHERE org_id = %s", (org.id,))
    assert stored == [{"key_hash": hashlib.sha256(key.encode()).hexdigest(), "key_prefix": key[:11]}]
    assert hash_key(key) == stored[0]["key_hash"]
    texts = _dump_all_tables(db)
    _assert_nowhere(key, texts)
    assert key[11:] not in "".join(texts.values())  # nothing past the 4-character prefix


def test_key_comparison_is_constant_time() -> None:
    source = inspect.getsource(directory.Directory.authenticate)
    assert "hmac.compare_digest" in source


def test_azure_endpoint_with_credentials_in_it_is_not_echoed(
    proxy: ProxyProcess, db: Any, new_org: Any, fakes: FakeProviders
) -> None:
    """An Azure endpoint is configuration, not a secret, but errors about it never echo URLs. User
    info is refused where the endpoint is set (SPEC §3), and one stored before that rule is refused
    at request time: neither message repeats the URL."""
    org, key = new_org("azure-url")
    secret = uuid.uuid4().hex
    endpoint = f"http://user:{secret}@127.0.0.1:9"  # nothing listens on port 9
    with pytest.raises(OrgError) as refused:
        set_azure(db, org.name, endpoint, "2024-02-01", allowed_hosts=TEST_AZURE_HOSTS)
    assert "user info" in str(refused.value) and secret not in str(refused.value)
    db.execute("UPDATE orgs SET azure_endpoint = %s WHERE id = %s", (endpoint, org.id))  # as stored before the rule
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json={**CHAT, "model": "dep"},
        headers={"X-Lectr-Key": key, "Authorization": "Bearer sk-x-123456789", "X-Lectr-Provider": "azure"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "azure_not_configured"
    assert secret not in response.text and "127.0.0.1" not in response.text
    assert secret not in proxy.logs()
