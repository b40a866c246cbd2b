"""Org isolation (a session sees its own org and nothing else), sign-in, empty states, Settings."""

from __future__ import annotations

import re
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.auth import SESSION_ORG
from proxy.store.orgs import get_org, org_for_key
from tests.dashboard.conftest import ENTRY, PAGES, RIVAL_FEATURES, RIVAL_MODEL, SeededOrg, open_page, page_text, sign_in

DEMO_ONLY = ("ticket-classifier", "doc-summary", "invoice-extract", "support-bot")


@pytest.mark.parametrize("period", ["24h", "30d"])
def test_demo_never_sees_the_rival(as_demo: AppTest, period: str) -> None:
    for page in PAGES:
        text = page_text(open_page(as_demo, page, period))
        for feature in RIVAL_FEATURES:
            assert feature not in text, f"{feature} shown to demo on {page}"
        assert "rival-customer" not in text, f"a rival end user shown to demo on {page}"


def test_rival_sees_only_its_own(app_env: None, demo_org: SeededOrg, rival_org: SeededOrg) -> None:
    at = sign_in(rival_org.key)
    seen_own = False
    for page in PAGES:
        text = page_text(open_page(at, page, "24h"))
        seen_own = seen_own or RIVAL_FEATURES[0] in text
        assert re.search(r"(?<!rival-)customer-\d{3}", text) is None, f"demo's end user shown to the rival on {page}"
        for feature in DEMO_ONLY:
            assert feature not in text, f"demo's {feature} shown to the rival on {page}"
    assert seen_own
    at = open_page(at, "requests", "24h")
    assert set(at.dataframe[0].value["model"]) == {RIVAL_MODEL}


def test_a_wrong_key_does_not_sign_in(app_env: None) -> None:
    at = sign_in("lc_key_not-a-key-at-all-000000000000")
    assert at.error and "not active" in at.error[0].value
    assert SESSION_ORG not in at.session_state


def test_the_session_keeps_the_org_not_the_key(as_demo: AppTest, demo_org: SeededOrg) -> None:
    at = open_page(as_demo, "overview")
    state = at.session_state._state  # everything Streamlit holds for the session, widgets included
    assert demo_org.key not in repr(state.filtered_state)
    assert demo_org.key not in repr(state.get_widget_states())
    assert at.session_state[SESSION_ORG].name == "demo"


def test_new_org_gets_the_quickstart(app_env: None, new_org: Any) -> None:
    _, key = new_org("fresh")
    at = sign_in(key)
    code = "\n".join(c.value for c in at.code)
    assert "http://proxy.test:8080/v1" in code and "X-Lectr-Key" in code
    for page in ("features", "providers", "requests", "anomalies"):
        at = open_page(at, page)
        assert any("proxy.test:8080/v1" in c.value for c in at.code), page


def test_rotate_key_shows_the_new_key_once(app_env: None, new_org: Any, db: Any) -> None:
    org, key = new_org("rotate")
    at = open_page(sign_in(key), "settings")
    at.checkbox(key="rotate_confirm").check().run()
    at.button(key="rotate_key").click().run()
    assert not at.exception
    shown = [c.value for c in at.code if c.value.startswith("lc_key_")]
    assert len(shown) == 1
    new_key = shown[0]
    assert org_for_key(db, key) is None
    assert org_for_key(db, new_key) is not None and org_for_key(db, new_key).id == org.id  # type: ignore[union-attr]
    at.run()
    assert not [c.value for c in at.code if c.value.startswith("lc_key_")], "the key is shown once"
    assert sign_in(new_key).session_state[SESSION_ORG].id == org.id


def test_azure_endpoint_is_saved_and_validated(app_env: None, new_org: Any, db: Any) -> None:
    org, key = new_org("azure")
    at = open_page(sign_in(key), "settings")
    at.text_input[0].input("not a url")
    at.button(key="FormSubmitter:azure-Save").click().run()
    assert at.error and "https://<resource>.openai.azure.com" in at.error[0].value
    # The SSRF of issue 14: an internal address is refused here too, and the rule says how to allow a gateway.
    at.text_input[0].input("http://127.0.0.1:9/internal/admin/secret#")
    at.button(key="FormSubmitter:azure-Save").click().run()
    assert at.error and "LECTR_AZURE_ALLOWED_HOSTS" in at.error[0].value and "/internal" not in at.error[0].value
    assert get_org(db, org.name).azure_endpoint is None
    at.text_input[0].input("https://acme.openai.azure.com/")
    at.text_input[1].input("2024-06-01")
    at.button(key="FormSubmitter:azure-Save").click().run()
    assert not at.exception
    saved = get_org(db, org.name)
    assert (saved.azure_endpoint, saved.azure_api_version) == ("https://acme.openai.azure.com", "2024-06-01")
    assert any("Routing rules" in h.value for h in at.subheader)


def test_signed_out_pages_show_only_sign_in(app_env: None) -> None:
    at = AppTest.from_file(str(ENTRY), default_timeout=30).run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Org key"]
    assert not at.metric and not at.dataframe


def test_routing_rules_editor_adds_toggles_and_deletes(app_env: None, new_org: Any, db: Any) -> None:
    from proxy.store.rules import list_rules

    org, key = new_org("routing-ui")
    at = open_page(sign_in(key), "settings")
    at.text_input(key="rule_feature").input("classifier")
    at.selectbox(key="rule_task").select("classification")
    at.text_input(key="rule_to_model").input("gpt-4o-mini")
    at.text_input(key="rule_fallbacks").input("gpt-4.1-nano, anthropic:claude-3-5-haiku-latest")
    at.button(key="FormSubmitter:add_rule-Add rule").click().run()
    assert not at.exception and not at.error
    rules = list_rules(db, org.name)
    assert [(r["match_feature"], r["match_task"], r["to_model"], r["fallbacks"]) for r in rules] == [
        ("classifier", "classification", "gpt-4o-mini", ["gpt-4.1-nano", "anthropic:claude-3-5-haiku-latest"])]
    rid = rules[0]["id"]
    at.toggle(key=f"rule_on_{rid}").set_value(False).run()
    assert list_rules(db, org.name)[0]["enabled"] is False
    # An unreachable target is refused with a message, not an exception.
    at.text_input(key="rule_to_model").input("my-deployment")
    at.selectbox(key="rule_to_provider").select("azure")
    at.button(key="FormSubmitter:add_rule-Add rule").click().run()
    assert at.error and "Azure endpoint" in at.error[0].value and len(list_rules(db, org.name)) == 1
    at.button(key=f"rule_rm_{rid}").click().run()
    assert list_rules(db, org.name) == []
    at.text_input(key="org_fallbacks").input("gpt-4o-mini")
    at.button(key="FormSubmitter:org_fallbacks-Save fallbacks").click().run()
    assert db.execute("SELECT fallbacks FROM orgs WHERE id = %s", (org.id,)).fetchone()[0] == ["gpt-4o-mini"]


def test_recommendation_card_applies_as_routing_rule(as_demo: AppTest, demo_org: SeededOrg, db: Any) -> None:
    from proxy.store.rules import list_rules, remove_rule

    at = open_page(as_demo, "recommendations")
    assert at.button(key="apply_0")
    at.button(key="apply_0").click().run()
    assert not at.exception and at.success
    rules = list_rules(db, demo_org.name)
    assert len(rules) == 1 and rules[0]["to_model"] and rules[0]["match_model"]
    remove_rule(db, demo_org.name, rules[0]["id"])
