"""The Lectr dashboard: `streamlit run dashboard/streamlit_app.py` (`lectr up` starts it).

Signed out, the only page is sign-in. Signed in, the sidebar carries the org, the period every
page shares and sign-out, and `st.navigation` routes between the pages in `app_pages/`.
"""

from __future__ import annotations

import streamlit as st

from dashboard.auth import current_org, sign_in_page, sign_out
from dashboard.components import period_selector
from dashboard.data import warm_up

# A dashboard for teams, not a Streamlit development session: no "Deploy" button in the toolbar.
st.set_option("client.toolbarMode", "viewer")
st.set_page_config(page_title="Lectr", page_icon=":material/monitoring:", layout="wide")

org = current_org()
if org is None:
    warm_up()
    st.navigation([st.Page(sign_in_page, title="Sign in", icon=":material/key:")], position="hidden").run()
else:
    pages = {
        "Analytics": [
            st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
            st.Page("app_pages/features.py", title="Features", icon=":material/category:"),
            st.Page("app_pages/providers.py", title="Providers & models", icon=":material/hub:"),
            st.Page("app_pages/end_users.py", title="End users", icon=":material/group:"),
            st.Page("app_pages/requests.py", title="Requests", icon=":material/list:"),
        ],
        "Act": [
            st.Page("app_pages/recommendations.py", title="Recommendations", icon=":material/savings:"),
            st.Page("app_pages/anomalies.py", title="Anomalies", icon=":material/warning:"),
            st.Page("app_pages/settings.py", title="Settings", icon=":material/settings:"),
        ],
    }
    page = st.navigation(pages)
    with st.sidebar:
        st.markdown(f"**{org.name}**")
        period_selector()
        st.button("Sign out", on_click=sign_out, icon=":material/logout:")
    page.run()
