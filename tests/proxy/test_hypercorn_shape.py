"""The parts of Hypercorn and httptools that proxy/http/server.py and proxy/http/transport.py stand on.

`server.install()` swaps `hypercorn.trio.run.TCPServer` for our connection handler and calls the
stock one for what it does not serve; the handler reads Hypercorn's Config and WorkerContext. A
Hypercorn release that moves or reshapes any of these would turn our handler off silently (or
break it at the first connection). These tests fail loudly, naming what changed, so a dependency
upgrade is a decision and not an accident; `pyproject.toml` pins the range they pass on.
"""

from __future__ import annotations

import inspect

import httptools
import hypercorn
import hypercorn.trio.run as hypercorn_run
import pytest
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from proxy.http import server

# Config attributes proxy/http/server.py reads, each with the type it expects.
CONFIG_READ = {
    "accesslog": (type(None), str, object),
    "statsd_host": (type(None), str),
    "server_names": (list,),
    "h11_max_incomplete_size": (int,),
    "read_timeout": (type(None), int, float),
    "keep_alive_timeout": (int, float),
    "keep_alive_max_requests": (int,),
    "root_path": (str,),
}


def test_worker_serve_looks_tcp_server_up_as_a_module_global() -> None:
    code = hypercorn_run.worker_serve.__code__
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and lambdas
        if inspect.iscode(const):
            names |= set(const.co_names)
    assert "TCPServer" in names, (
        f"Hypercorn {hypercorn.__version__ if hasattr(hypercorn, '__version__') else '?'}: "
        "hypercorn.trio.run.worker_serve no longer looks up the module global TCPServer, so "
        "proxy.http.server.install() cannot replace it: the lean HTTP/1.1 server would be off silently"
    )
    assert hypercorn_run.TCPServer is TCPServer or getattr(hypercorn_run.TCPServer, "stock", None) is TCPServer, (
        "hypercorn.trio.run.TCPServer is no longer hypercorn.trio.tcp_server.TCPServer"
    )


def test_tcp_server_is_built_as_install_builds_it() -> None:
    parameters = list(inspect.signature(TCPServer.__init__).parameters)
    assert parameters == ["self", "app", "config", "context", "state", "stream"], (
        f"TCPServer.__init__ changed its parameters to {parameters}: proxy.http.server.install()'s factory "
        "passes (app, config, context, state, stream)"
    )
    assert hasattr(TCPServer, "__await__") or inspect.iscoroutinefunction(getattr(TCPServer, "run", None)), (
        "a TCPServer instance is no longer awaitable: serve_connection awaits the stock one for TLS and HTTP/2"
    )


def test_worker_context_has_what_the_server_uses() -> None:
    context = WorkerContext(None)
    assert hasattr(context, "terminated") and hasattr(context.terminated, "is_set"), (
        "WorkerContext.terminated (an event) is gone: the server uses it to close idle connections on shutdown"
    )
    assert inspect.iscoroutinefunction(context.mark_request), (
        "WorkerContext.mark_request is no longer a coroutine function: the server awaits it per request"
    )


@pytest.mark.parametrize(("name", "types"), sorted(CONFIG_READ.items()))
def test_config_has_what_the_server_reads(name: str, types: tuple[type, ...]) -> None:
    config = Config()
    assert hasattr(config, name), f"hypercorn.config.Config.{name} is gone: proxy/http/server.py reads it"
    assert isinstance(getattr(config, name), types), f"Config.{name} is now {type(getattr(config, name))}"
    assert inspect.iscoroutinefunction(config.log.exception), "Config.log.exception is no longer awaitable"


def test_install_replaces_and_uninstall_restores() -> None:
    server.install()
    try:
        assert hypercorn_run.TCPServer is not TCPServer and hypercorn_run.TCPServer.stock is TCPServer
    finally:
        server.uninstall()
    assert hypercorn_run.TCPServer is TCPServer


def test_httptools_refuses_chunk_data_without_its_crlf() -> None:
    """httptools 0.6.0-0.6.2 accepted `5\\r\\nhelloXX0\\r\\n\\r\\n` (a request smuggling gap); the pin
    in pyproject.toml excludes them, and this says so if an install ever brings one back."""

    class Callbacks:
        pass

    parser = httptools.HttpRequestParser(Callbacks())
    with pytest.raises(httptools.HttpParserError):
        parser.feed_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n")
    for method in ("get_method", "get_http_version", "should_keep_alive", "feed_data"):
        assert hasattr(parser, method), f"httptools.HttpRequestParser.{method} is gone"
    assert hasattr(httptools.HttpResponseParser(Callbacks()), "get_status_code")
