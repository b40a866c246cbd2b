"""Rollups through the real proxy: random traffic from the official SDK, over every provider,
streams and errors, tagged and untagged; the rollups equal the raw events' sums exactly."""

from __future__ import annotations

import random
from typing import Any

import openai

from proxy.store.orgs import set_azure
from tests.conftest import TEST_AZURE_HOSTS, ProxyProcess
from tests.fakes import FakeProviders, wait_for
from tests.rollup_check import assert_quantiles, assert_rollups_match_events
from tests.test_proxy_e2e import MODELS, client_for


def test_rollups_of_real_traffic_equal_the_raw_sums(
    proxy: ProxyProcess, db: Any, new_org: Any, fakes: FakeProviders
) -> None:
    org, key = new_org("rollup-e2e")
    set_azure(db, org.name, fakes["azure"].base_url, allowed_hosts=TEST_AZURE_HOSTS)
    rng = random.Random(16)
    models = [*MODELS.items(), ("openai", "mystery-model-9000")]  # the last one has no price: unpriced
    sent = errors = 0
    for _ in range(90):
        provider, model = rng.choice(models)
        headers = {"X-Lectr-Provider": "azure"} if provider == "azure" else {}
        if feature := rng.choice(("search", "support", None)):
            headers["X-Lectr-Feature"] = feature
        if task := rng.choice(("classification", "reasoning", None)):
            headers["X-Lectr-Task"] = task
        if user := rng.choice(("alice", "bob", None, None)):
            headers["X-Lectr-User"] = user
        scenario = rng.choice(("", "", "", "", "error-429", "error-500"))
        if scenario:
            headers["x-fake-scenario"] = scenario
        client = client_for(proxy, key, **headers)
        messages = [{"role": "user", "content": "hi"}] * rng.randint(1, 4)
        stream = rng.random() < 0.5
        try:
            if stream:
                list(client.chat.completions.create(model=model, messages=messages, stream=True))
            else:
                client.chat.completions.create(model=model, messages=messages)
        except openai.APIStatusError as exc:
            assert exc.status_code in (429, 500)
            errors += 1
        sent += 1
    assert errors > 5
    query = "SELECT count(*) FROM events WHERE org_id = %s"
    wait_for(lambda: db.execute(query, (org.id,)).fetchone()[0] >= sent, timeout=20)
    assert assert_rollups_match_events(db, [org.id]) == sent
    assert_quantiles(db, org.id)
    unpriced, users = db.execute(
        "SELECT sum(unpriced), (SELECT count(DISTINCT end_user) FROM rollup_daily_end_user WHERE org_id = %s)"
        " FROM rollup_hourly WHERE org_id = %s", (org.id, org.id)
    ).fetchone()
    assert unpriced > 0 and users == 2
