"""Sign-in with an org key: the session holds the org's id and name, never the key.

The key is read from a password field inside a form that clears itself on submit, looked up by
its hash (`proxy.store.orgs.org_for_key`) and dropped. Every loader takes the org id from here, so a
session can only ever ask for its own org's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard.db import database
from proxy.store.orgs import KEY_PREFIX, org_for_key

SESSION_ORG = "lectr_org"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who this session is: all it keeps about the org."""

    id: int
    name: str


def current_org() -> SignedIn | None:
    org = st.session_state.get(SESSION_ORG)
    return org if isinstance(org, SignedIn) else None


def require_org() -> SignedIn:
    """The signed-in org; a page run without one stops here (the entry file shows sign-in)."""
    org = current_org()
    if org is None:
        st.warning("Sign in with your org key to see this page.")
        st.stop()
    assert org is not None
    return org


def sign_in(key: str) -> SignedIn | None:
    """Look the key up; on success remember the org (not the key) in the session."""
    key = key.strip()
    if not key:
        return None
    with database().read() as conn:
        org = org_for_key(conn, key)
    if org is None:
        return None
    signed_in = SignedIn(org.id, org.name)
    st.session_state[SESSION_ORG] = signed_in
    return signed_in


def sign_out() -> None:
    """Forget everything this session knew (org, filters, pagination)."""
    for name in list(st.session_state.keys()):
        del st.session_state[name]


def sign_in_page() -> None:
    """The only page a signed-out session can see."""
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        _sign_in_form()


def _sign_in_form() -> None:
    st.title("Lectr")
    st.caption("LLM cost, latency and errors per feature, from your own proxy.")
    with st.form("sign_in", clear_on_submit=True, border=True):
        key = st.text_input(
            "Org key", type="password", placeholder=f"{KEY_PREFIX}…",
            help="The key your app sends as `X-Lectr-Key`. `lectr org create <name>` prints one.",
        )
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if sign_in(key) is None:
            st.error("That key is not active. Check for typos, or create one with `lectr org create <name>`.")
        else:
            st.rerun()
    st.caption("New here? Run `lectr org create my-team` and paste the key it prints. "
               "For sample data, `lectr demo` fills the org `demo` and prints its key.")
