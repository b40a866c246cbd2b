"""Settings → Budgets and Alert webhooks: add, show spend as a bar, remove; webhook URL rule; the
delivery log after a test alert to a real receiver."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from proxy.store.budgets import list_budgets
from proxy.store.webhooks import list_webhooks
from tests.dashboard.conftest import open_page, sign_in
from tests.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_budgets_are_added_shown_with_their_spend_and_removed(app_env: None, new_org: Any, db: Any) -> None:
    org, key = new_org("budget-ui")
    at = open_page(sign_in(key), "settings")
    at.number_input(key="budget_limit").set_value(40.0)
    at.text_input(key="budget_feature").input("chat")
    at.text_input(key="budget_alert_at").input("50,100")
    at.checkbox(key="budget_hard").check()
    at.button(key="FormSubmitter:add_budget-Add budget").click().run()
    assert not at.exception and not at.error
    [budget] = list_budgets(db, org.name)
    assert (budget["limit_usd"], budget["feature"], budget["period"], budget["hard"], budget["alert_at"]) == (
        40.0, "chat", "month", True, [50, 100])
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    db.execute("INSERT INTO rollup_hourly (org_id, hour, feature, provider, requests, cost_usd)"
               " VALUES (%s, %s, 'chat', 'openai', 3, %s)", (org.id, hour, Decimal("10")))
    at.run()
    text = " ".join(m.value for m in at.markdown)
    assert "spent **$10.00** (25 %)" in text and "feature `chat`" in text and "alerts at 50 %, 100 %" in text
    assert len(at.get("vega_lite_chart")) >= 1  # the bar
    at.text_input(key="budget_alert_at").input("zero")
    at.button(key="FormSubmitter:add_budget-Add budget").click().run()
    assert at.error and "--alert-at" in at.error[0].value and len(list_budgets(db, org.name)) == 1
    at.button(key=f"budget_rm_{budget['id']}").click().run()
    assert list_budgets(db, org.name) == []


def test_webhooks_follow_the_address_rule_and_the_log_shows_deliveries(
    app_env: None, new_org: Any, db: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, key = new_org("hook-ui")
    at = open_page(sign_in(key), "settings")
    at.text_input(key="hook_url").input(f"{receiver.url}/secret-path")
    at.button(key="FormSubmitter:add_webhook-Add webhook").click().run()
    assert at.error and "LECTR_ALLOW_PRIVATE_UPSTREAMS" in at.error[0].value
    assert "secret-path" not in at.error[0].value and list_webhooks(db, org.name) == []
    monkeypatch.setenv("LECTR_ALLOW_PRIVATE_UPSTREAMS", "1")
    at.selectbox(key="hook_format").select("slack")
    at.button(key="FormSubmitter:add_webhook-Add webhook").click().run()
    assert not at.error
    [hook] = list_webhooks(db, org.name)
    assert hook["format"] == "slack"
    assert "secret-path" not in " ".join(m.value for m in at.markdown)  # the URL's path is not shown
    at.button(key="hook_test").click().run()
    assert not at.exception and at.success and "delivered (HTTP 200" in at.success[-1].value
    assert receiver.on("/secret-path")[0].json()["text"].startswith("*Test alert from Lectr*")
    log = at.dataframe[-1].value
    assert list(log["outcome"]) == ["delivered"] and list(log["kind"]) == ["test"]
    at.button(key=f"hook_rm_{hook['id']}").click().run()
    assert list_webhooks(db, org.name) == []
