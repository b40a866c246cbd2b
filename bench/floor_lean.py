"""The floor apps of `floor_apps.py` served by Hypercorn's trio worker with Lectr's HTTP/1.1
connection handler (`proxy/http/server.py`) installed, as `create_app()` does for the proxy."""

from __future__ import annotations

from floor_apps import relay_h11, static

from proxy.http import server

server.install()

__all__ = ["relay_h11", "static"]
