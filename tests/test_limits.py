"""Limits: per-org request rate (429 + retry-after, from the proxy) and concurrent streams per worker."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.core.errors import RateLimited
from proxy.pipeline.limits import RateLimiter
from tests.conftest import ProxyProcess, proxy_env
from tests.fakes import FakeProviders, wait_for
from tests.test_proxy_e2e import PROVIDER_KEY

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_token_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=3)  # a token a second: no refill between these checks on a busy machine
    for _ in range(3):
        limiter.check(1)
    with pytest.raises(RateLimited) as caught:
        limiter.check(1)
    assert caught.value.status == 429 and (b"retry-after", b"1") in caught.value.headers()
    limiter.check(2)  # another org has its own bucket
    RateLimiter(rate=0).check(1)  # off


@pytest.fixture(scope="module")
def limited(pg_url: str, fakes: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("limited")
    env = proxy_env(
        pg_url, fakes, Path(data), LECTR_RATE_LIMIT_RPS="0.5", LECTR_RATE_LIMIT_BURST="3", LECTR_MAX_STREAMS="2"
    )
    server = ProxyProcess(env, Path(data) / "proxy.log").start()
    yield server
    server.stop()


def test_rate_limit_is_429_json_with_retry_after(limited: ProxyProcess, fakes: FakeProviders, new_org: Any) -> None:
    _, key = new_org("ratelimit")
    _, other = new_org("ratelimit-other")
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}"}
    statuses = [
        httpx.post(f"{limited.url}/v1/chat/completions", json=CHAT, headers=headers).status_code for _ in range(5)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    response = httpx.post(f"{limited.url}/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "lectr_rate_limited"
    other_headers = {**headers, "X-Lectr-Key": other}
    assert httpx.post(f"{limited.url}/v1/chat/completions", json=CHAT, headers=other_headers).status_code == 200


def test_max_concurrent_streams_per_worker(limited: ProxyProcess, fakes: FakeProviders, new_org: Any) -> None:
    keys = [new_org("streams")[1] for _ in range(3)]  # separate orgs: the rate limit stays out of the way
    fakes.reset()
    done: list[int] = []

    def stream(key: str) -> None:
        with httpx.stream(
            "POST",
            f"{limited.url}/v1/chat/completions",
            json={**CHAT, "stream": True},
            timeout=20,
            headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "x-fake-scenario": "slow-stream"},
        ) as response:
            b"".join(response.iter_raw())
            done.append(response.status_code)

    threads = [threading.Thread(target=stream, args=(key,)) for key in keys[:2]]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(fakes["openai"].received) >= 2, interval=0.005)
    third = httpx.post(
        f"{limited.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Lectr-Key": keys[2], "Authorization": f"Bearer {PROVIDER_KEY}"},
    )
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert third.json()["error"]["code"] == "lectr_overloaded"
    for thread in threads:
        thread.join(20)
    assert done == [200, 200]
    # Slots are given back: a new stream goes through.
    again = httpx.post(
        f"{limited.url}/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Lectr-Key": keys[2], "Authorization": f"Bearer {PROVIDER_KEY}"},
    )
    assert again.status_code == 200
