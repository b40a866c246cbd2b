"""Settings: integration, the org key, the Azure endpoint, routing rules, budgets, alert webhooks.

One function per section, listed in `SECTIONS`: a new section is a function and a line.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dashboard import budgets_editor, routing_editor
from dashboard import format as fmt
from dashboard.auth import SignedIn, require_org
from dashboard.components import header, proxy_url
from dashboard.db import active_key_prefixes, database
from proxy.core.config import Settings
from proxy.store.orgs import OrgError, get_org, rotate_key, set_azure


def integration(org: SignedIn) -> None:
    st.subheader("Integration")
    st.markdown("Send requests to the proxy with your org key; tag them with a feature and a task:")
    st.code(
        f"base_url: {proxy_url()}\n"
        "X-Lectr-Key: <your org key>\n"
        "X-Lectr-Feature: <the feature sending it>      # optional, e.g. chat\n"
        "X-Lectr-Task: <classification|summarisation|extraction|generation|reasoning>  # optional",
        language="yaml",
    )
    keys = active_key_prefixes(org.id)
    if keys:
        st.caption("Active keys: " + ", ".join(f"`{prefix}…` (created {fmt.timestamp(created)})"  # type: ignore[arg-type]
                                               for prefix, created in keys))


def org_key(org: SignedIn) -> None:
    st.subheader("Org key")
    st.markdown("Rotating revokes every active key of the org at once (the proxy stops accepting them within "
                "seconds) and creates a new one, shown here once.")
    confirmed = st.checkbox("I understand that apps using the current key stop working", key="rotate_confirm")
    if st.button("Rotate key", disabled=not confirmed, type="primary", key="rotate_key"):
        with database().write() as conn:
            new_key = rotate_key(conn, org.name)
        st.success("New key created. Copy it now: it is not stored and will not be shown again.")
        st.code(new_key, language=None)


def azure(org: SignedIn) -> None:
    st.subheader("Azure OpenAI")
    with database().read() as conn:
        current = get_org(conn, org.name)
    st.caption("Requests with `X-Lectr-Provider: azure` go to this endpoint; the model is the deployment name.")
    with st.form("azure", border=True):
        endpoint = st.text_input("Endpoint", value=current.azure_endpoint or "",
                                 placeholder="https://<resource-name>.openai.azure.com")
        version = st.text_input("API version", value=current.azure_api_version)
        saved = st.form_submit_button("Save")
    if saved:
        try:
            with database().write() as conn:
                # The same rule as `lectr org azure`: the operator's gateway hosts, or Azure itself.
                allowed = Settings.from_env().azure_allowed_hosts
                updated = set_azure(conn, org.name, endpoint, version, allowed_hosts=allowed)
        except OrgError as exc:
            st.error(str(exc))
        else:
            st.success(f"Saved: {updated.azure_endpoint} (API version {updated.azure_api_version}).")


def routing_rules(org: SignedIn) -> None:
    st.subheader("Routing rules")
    routing_editor.editor(org)


def budgets(org: SignedIn) -> None:
    st.subheader("Budgets")
    budgets_editor.budgets(org)


def alerts(org: SignedIn) -> None:
    st.subheader("Alert webhooks")
    budgets_editor.webhooks(org)


SECTIONS: list[Callable[[SignedIn], None]] = [integration, org_key, azure, routing_rules, budgets, alerts]

org = require_org()
header("Settings", f"Org `{org.name}`")
for section in SECTIONS:
    section(org)
    st.divider()
