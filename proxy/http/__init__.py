"""Our HTTP/1.1: the server connection handler (inside Hypercorn's trio worker) and the upstream client.

Knows nothing above it: no org, no provider, no event (import-linter contract in pyproject.toml).
"""
