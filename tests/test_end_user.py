"""End users (SPEC §3): `X-Lectr-User`, else the body's `user` (OpenAI) or `metadata.user_id`
(Anthropic), stored in `events.end_user`; the header is consumed, never forwarded."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.pipeline.body import inspect
from proxy.pipeline.headers import read_request_headers
from tests.conftest import ProxyProcess
from tests.fakes import FakeProviders
from tests.test_events_e2e import events
from tests.test_proxy_e2e import PROVIDER_KEY, client_for


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"gpt-4o","user":"u-1"}', "u-1"),
        (b'{"model":"claude-3-5-haiku-latest","metadata":{"user_id":"acct-9"}}', "acct-9"),
        (b'{"model":"gpt-4o","user":"u-1","metadata":{"user_id":"acct-9"}}', "u-1"),
        (b'{"model":"gpt-4o","user":""}', None),
        (b'{"model":"gpt-4o","user":42}', None),
        (b'{"model":"gpt-4o","metadata":"x"}', None),
        (b'{"model":"gpt-4o","user":"' + b"x" * 300 + b'"}', "x" * 200),
        (b'{"model":"gpt-4o"}', None),
    ],
)
def test_end_user_from_the_body(body: bytes, expected: str | None) -> None:
    assert inspect(body, b"application/json", "chat/completions").end_user == expected


def test_end_user_header_is_consumed_and_cut_to_200_characters() -> None:
    incoming = read_request_headers([(b"x-lectr-user", "ü".encode() * 250), (b"x-other", b"1")], 16384)
    assert incoming.end_user == "ü" * 200
    assert incoming.forward == [(b"x-other", b"1")]
    assert read_request_headers([(b"x-lectr-user", b"")], 16384).end_user is None


def test_end_user_reaches_the_event_and_never_the_provider(
    proxy: ProxyProcess, db: Any, new_org: Any, fakes: FakeProviders
) -> None:
    org, key = new_org("endusers")
    fakes.reset()
    messages = [{"role": "user", "content": "hi"}]
    client_for(proxy, key, **{"X-Lectr-Feature": "header", "X-Lectr-User": "alice"}).chat.completions.create(
        model="gpt-4o-mini", messages=messages, user="body-user"
    )
    client_for(proxy, key, **{"X-Lectr-Feature": "body"}).chat.completions.create(
        model="gpt-4o-mini", messages=messages, user="bob"
    )
    client_for(proxy, key, **{"X-Lectr-Feature": "none"}).chat.completions.create(
        model="gpt-4o-mini", messages=messages
    )
    anthropic = httpx.post(
        f"{proxy.url}/v1/messages",
        headers={"X-Lectr-Key": key, "X-Lectr-Feature": "anthropic", "x-api-key": PROVIDER_KEY},
        json={
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 10,
            "metadata": {"user_id": "carol"},
            "messages": messages,
        },
        timeout=20,
    )
    assert anthropic.status_code == 200
    rows = {row["feature"]: row for row in events(db, org.id, 4)}
    assert rows["header"]["end_user"] == "alice"  # the header wins over the body
    assert rows["body"]["end_user"] == "bob"
    assert rows["none"]["end_user"] is None
    assert rows["anthropic"]["end_user"] == "carol"
    for provider in ("openai", "anthropic"):
        for received in fakes[provider].received:
            assert "x-lectr-user" not in received.headers
            assert all(not name.lower().startswith("x-lectr") for name in received.headers)
