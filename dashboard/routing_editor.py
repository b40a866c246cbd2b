"""The routing rules editor (Settings) and "apply as routing rule" (Recommendations).

Rules live in Postgres (`proxy.store.rules`); every proxy worker picks a change up within 5 seconds.
All writes go through `proxy.store.rules`, which scopes each operation to the signed-in org and refuses
targets the org cannot reach (e.g. Azure without an endpoint).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from analytics import TASKS
from dashboard.auth import SignedIn
from dashboard.db import database
from proxy.core.providers import PROVIDERS
from proxy.store.orgs import OrgError
from proxy.store.rules import add_rule, get_fallbacks, list_rules, remove_rule, rule_parts, set_enabled, set_fallbacks


def _describe(rule: dict[str, Any]) -> str:
    conditions, target, fallbacks = rule_parts(rule)
    when = " and ".join(f"{label} = `{value}`" for label, value in conditions) or "any request"
    also = f" · fallbacks: {', '.join(f'`{f}`' for f in fallbacks)}" if fallbacks else ""
    return f"**#{rule['id']}** (priority {rule['priority']}) · when {when} → `{target}`{also}"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def editor(org: SignedIn) -> None:
    """List, enable/disable, delete and add the org's rules; set its default fallbacks."""
    st.caption("The first enabled rule by priority (lower first) that matches a request sends it to another "
               "model. Fallbacks are tried in order when the provider answers 429/5xx or times out, before "
               "anything reaches your app. A target on another provider needs that provider's key in "
               "`X-Lectr-Auth-<Provider>`; your key is never sent to another provider.")
    with st.form("add_rule", border=True):
        st.markdown("**Add a rule** (leave a condition empty to match anything)")
        left, right = st.columns(2)
        feature = left.text_input("When feature is", key="rule_feature")
        task = right.selectbox("and task is", ["", *TASKS], key="rule_task")
        model = left.text_input("and requested model is", key="rule_model")
        provider = right.selectbox("and provider is", ["", *PROVIDERS], key="rule_provider")
        to_model = left.text_input("Send to model", key="rule_to_model")
        to_provider = right.selectbox("on provider (empty: from the model name)", ["", *PROVIDERS],
                                      key="rule_to_provider")
        priority = left.number_input("Priority", value=100, step=1, key="rule_priority")
        rule_fallbacks = right.text_input("Fallbacks, in order (`model` or `provider:model`, comma-separated)",
                                          key="rule_fallbacks")
        added = st.form_submit_button("Add rule")
    if added:
        rule_id = _write(lambda conn: add_rule(
            conn, org.name, to_model=to_model, feature=feature.strip() or None, task=task or None,
            model=model.strip() or None, provider=provider or None, to_provider=to_provider or None,
            priority=int(priority), fallbacks=_split(rule_fallbacks)))
        if rule_id is not None:
            st.success(f"Rule #{rule_id} added; the proxy applies it within 5 seconds.")

    with database().read() as conn:
        rules = list_rules(conn, org.name)
        fallbacks = get_fallbacks(conn, org.name)
    if not rules:
        st.info("No routing rules yet.", icon=":material/alt_route:")
    for rule in rules:
        described, toggle, delete = st.columns([6, 1, 1], vertical_alignment="center")
        described.markdown(_describe(rule))
        enabled = toggle.toggle("On", value=bool(rule["enabled"]), key=f"rule_on_{rule['id']}")
        if enabled != bool(rule["enabled"]):
            _write(lambda conn, r=rule, e=enabled: set_enabled(conn, org.name, r["id"], e))
            st.rerun()
        if delete.button("Delete", key=f"rule_rm_{rule['id']}"):
            _write(lambda conn, r=rule: remove_rule(conn, org.name, r["id"]))
            st.rerun()

    with st.form("org_fallbacks", border=True):
        st.markdown("**Default fallbacks** for requests no rule matches")
        value = ", ".join(fallbacks)
        text = st.text_input("Fallback models, in order", value=value, key="org_fallbacks")
        saved = st.form_submit_button("Save fallbacks")
    if saved and _write(lambda conn: set_fallbacks(conn, org.name, _split(text))):
        st.success("Default fallbacks saved.")


def _write(action: Any) -> Any:
    """Run a write and return its result (True when it returns nothing); on a refusal (an
    `OrgError`, e.g. an unreachable target) show it and return None instead of failing the page."""
    try:
        with database().write() as conn:
            result = action(conn)
    except OrgError as exc:
        st.error(str(exc))
        return None
    return True if result is None else result


def apply_button(org: SignedIn, rec: dict[str, Any], index: int) -> None:
    """On a recommendation card: make it a rule (this feature, task and model → the cheaper model)."""
    key = f"apply_{index}"
    if st.button("Apply as routing rule", key=key, help="Adds a rule: requests of this feature (and task) "
                 f"for {rec['from_model']} go to {rec['to_model']}."):
        rule_id = _write(lambda conn: add_rule(
            conn, org.name, feature=rec["feature"] if rec["feature"] != "untagged" else None,
            task=rec["task"] or None, model=rec["from_model"], provider=rec["provider"],
            to_model=rec["to_model"]))
        if rule_id:
            st.success(f"Rule #{rule_id} added: `{rec['from_model']}` → `{rec['to_model']}` for "
                       f"{rec['feature']}. Undo it under Settings → Routing rules.")
