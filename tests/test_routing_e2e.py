"""Routing rules and fallbacks through the proxy, with the fake providers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from proxy.store.rules import add_rule, set_fallbacks
from tests.conftest import ProxyProcess
from tests.fakes import FakeProviders, wait_for
from tests.test_events_e2e import events
from tests.test_proxy_e2e import PROVIDER_KEY

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def post(proxy: ProxyProcess, key: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/chat/completions",
        json=body or CHAT,
        timeout=20,
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", **headers},
    )


def models_received(fakes: FakeProviders, provider: str = "openai") -> list[str]:
    return [r.json()["model"] for r in fakes[provider].received]


def test_rule_routes_and_reaches_every_worker_within_5_seconds(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any
) -> None:
    org, key = new_org("routing")
    assert post(proxy, key, **{"X-Lectr-Feature": "classifier"}).status_code == 200
    rid = add_rule(db, org.name, feature="classifier", to_model="gpt-4o-mini")
    added = time.monotonic()
    fakes.reset()

    def routed() -> bool:
        post(proxy, key, **{"X-Lectr-Feature": "classifier"})
        return models_received(fakes)[-1] == "gpt-4o-mini"

    wait_for(routed, timeout=5, interval=0.1)
    assert time.monotonic() - added < 5
    fakes.reset()
    post(proxy, key, **{"X-Lectr-Feature": "chat"})  # another feature: untouched
    assert models_received(fakes) == ["gpt-4o"]
    wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM events WHERE org_id = %s AND routed_model IS NOT NULL", (org.id,)
            ).fetchone()[0]
            >= 1
        )
    )
    routed_rows = db.execute(
        "SELECT model, routed_model, route_rule_id FROM events WHERE org_id = %s AND routed_model IS NOT NULL",
        (org.id,),
    ).fetchall()
    assert set(routed_rows) == {("gpt-4o", "gpt-4o-mini", rid)}


def test_fallbacks_on_429_500_and_timeout(proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any) -> None:
    org, key = new_org("fallback")
    set_fallbacks(db, org.name, ["gpt-4o-mini"])
    time.sleep(1.2)  # two refreshes of the directory
    for failure in ("error-429", "error-500", "slow"):
        fakes.reset()
        response = post(
            proxy,
            key,
            **{"x-fake-fail-model": "gpt-4o", "x-fake-fail-with": failure, "X-Lectr-Feature": f"fb-{failure}"},
        )
        assert response.status_code == 200, failure
        assert models_received(fakes) == ["gpt-4o", "gpt-4o-mini"]
        assert response.json()["model"] == "gpt-4o-mini"
    rows = events(db, org.id, 3)
    assert {(r["model"], r["routed_model"], r["attempts"], r["status_code"]) for r in rows} == {
        ("gpt-4o", "gpt-4o-mini", 2, 200)
    }
    logs = sorted(r["attempt_log"] for r in rows)
    assert logs == [
        "gpt-4o@openai:429 gpt-4o-mini@openai:200",
        "gpt-4o@openai:500 gpt-4o-mini@openai:200",
        "gpt-4o@openai:504 gpt-4o-mini@openai:200",
    ]
    # When every attempt fails the client gets the last provider answer, as the provider sent it.
    fakes.reset()
    response = post(proxy, key, **{"x-fake-scenario": "error-500"})
    assert response.status_code == 500 and models_received(fakes) == ["gpt-4o", "gpt-4o-mini"]
    # Never after a stream has started: a stream that breaks mid-way is not retried.
    fakes.reset()
    with httpx.stream(
        "POST",
        f"{proxy.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "reset-mid-stream"},
    ) as stream, pytest.raises(httpx.RemoteProtocolError):  # cut short: the client sees it incomplete
        b"".join(stream.iter_raw())
    assert models_received(fakes) == ["gpt-4o"]


def test_cross_provider_targets_need_that_providers_key(
    proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any
) -> None:
    org, key = new_org("crossprov")
    add_rule(db, org.name, feature="summary", to_model="claude-3-5-haiku-latest")
    time.sleep(1.2)
    fakes.reset()
    assert post(proxy, key, **{"X-Lectr-Feature": "summary"}).status_code == 200
    # No Anthropic key given: the OpenAI key is never sent to Anthropic; the request stays put.
    assert not fakes["anthropic"].received and models_received(fakes) == ["gpt-4o"]
    response = post(proxy, key, **{"X-Lectr-Feature": "summary", "X-Lectr-Auth-Anthropic": "Bearer sk-ant-own"})
    assert response.status_code == 200
    received = fakes["anthropic"].received[-1]
    assert received.headers["x-api-key"] == "sk-ant-own" and received.json()["model"] == "claude-3-5-haiku-latest"
    assert not any(name.startswith("x-lectr") for name in received.headers)


def test_routing_never_crosses_orgs(proxy: ProxyProcess, fakes: FakeProviders, db: Any, new_org: Any) -> None:
    a, key_a = new_org("iso-a")
    _, key_b = new_org("iso-b")
    add_rule(db, a.name, to_model="gpt-4o-mini")  # every request of org A
    time.sleep(1.2)
    fakes.reset()
    post(proxy, key_a)
    post(proxy, key_b)
    assert models_received(fakes) == ["gpt-4o-mini", "gpt-4o"]
