"""Lectr dashboard (placeholder until the dashboard lands)."""

import streamlit as st

st.set_page_config(page_title="Lectr", page_icon="📊")
st.title("Lectr")
st.write("The dashboard is on its way. The proxy is running; send traffic through it.")
