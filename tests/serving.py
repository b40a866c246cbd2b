"""`proxy.http.server.serve_connection` on a local port, as Hypercorn's trio worker runs it: for the
tests that speak to our HTTP/1.1 server in-process over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from proxy.http import server


@asynccontextmanager
async def serving(
    app: Any, limits: server.Limits | None = None, **settings: Any
) -> AsyncIterator[tuple[int, WorkerContext]]:
    """Serve `app` on 127.0.0.1; yields the port and the worker context. `settings` are Hypercorn
    Config attributes; `limits` the server's own (connection cap, body deadline)."""
    config = Config()
    config.include_date_header = False
    config.include_server_header = False
    for name, value in settings.items():
        setattr(config, name, value)
    context = WorkerContext(None)
    wrapped = ASGIWrapper(app)
    setup = server.Setup(TCPServer, limits or server.Limits())

    async def handler(stream: trio.SocketStream) -> None:
        await server.serve_connection(server.Hosted(wrapped, config, context, {}), stream, setup)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], context
        nursery.cancel_scope.cancel()
