"""Lectr's proxy: one OpenAI-compatible base URL in front of five providers."""
