"""The Lectr proxy: `create_app()` (a Hypercorn target) and the path every request takes.

    client ──▶ Hypercorn's trio worker, plain HTTP/1.1 spoken by our server      (http/server.py)
           ──/v1/...──▶ Proxy.handle: one `Exchange` per request                   (pipeline/exchange.py)
                          1. authenticate: X-Lectr-* consumed, hop-by-hop dropped  (pipeline/headers.py)
                             X-Lectr-Key → org, from memory; rate limit           (pipeline/directory.py, limits.py)
                          2. read: the body; model, stream, usage option          (pipeline/body.py)
                          3. plan: provider (detection / override) → adapter      (pipeline/providers/)
                             hard budgets: reached or not, from memory            (pipeline/spend.py)
                             routing rules / fallbacks: the attempts in order     (pipeline/routing.py)
                          4. relay: upstream over HTTP/1.1, the answer as it comes (http/transport.py,
                                                                                    pipeline/relay.py, sse.py)
                          5. record: the Event to the writer, never awaited       (accounting/record.py,
                             (and to the OpenTelemetry exporter, when it is on)    events/writer.py, telemetry.py)
    anything else ──▶ Quart (health, readiness, metrics, JSON 404s)

A step that refuses the request raises a `LectrError`: the client gets it as JSON (`_refuse`), and
the request is recorded once it has an org. docs/ARCHITECTURE.md draws the rooms of `proxy/`.

The `/v1` route is plain ASGI rather than a Quart view: the response must be the provider's,
status, headers and bytes, with nothing added, and Quart's request/response objects cost time
on every call without giving us anything we use there.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson
import trio
from quart import Response
from quart_trio import QuartTrio

from proxy.accounting.record import Event
from proxy.core.config import Settings
from proxy.core.errors import BadRequest, LectrError, MethodNotAllowed, NotFound, Unauthorized, UpgradeRefused
from proxy.http import server
from proxy.http.fields import ALLOW
from proxy.http.transport import destination
from proxy.ops.logs import configure_logging
from proxy.pipeline import body as bodies
from proxy.pipeline.exchange import Attempt, Exchange, Scope
from proxy.pipeline.headers import read_request_headers, readable_accept_encoding, upstream_path
from proxy.pipeline.providers import Call, adapter_for, detect
from proxy.pipeline.relay import Client, Relay, Retry, read_body, send_error, watch_disconnect
from proxy.pipeline.routing import Target
from proxy.pipeline.upstream import Outbound
from proxy.worker import Worker

log = logging.getLogger("lectr.proxy")

class Proxy(Worker):
    """A worker (proxy/worker.py: its state and background tasks) and the path of each request."""

    def asgi(self, fallback: Any) -> Any:
        """Wrap Quart's ASGI app: `/v1/...` is ours, everything else goes to Quart."""

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/v1/"):
                try:
                    await self.handle(scope, receive, send)
                except Exception:
                    # A bug of ours: the client still gets JSON, the log gets the trace (no bodies
                    # or headers are in our frames' reprs, only types and counts).
                    log.exception("unexpected error on %s", scope["path"][:200])
                    await send_error(send, LectrError("internal error in the Lectr proxy"))
            else:
                await fallback(scope, receive, send)

        return app

    async def handle(self, scope: Scope, receive: Any, send: Any) -> None:
        """One request under `/v1/`: the steps of the module's diagram, over one `Exchange`."""
        method = scope["method"]
        if method not in _FORWARDED:
            await _answer_method(method, send)
            return
        x = Exchange(scope, receive, send)
        try:
            await self._authenticate(x)
            await self._read(x)
            await self._plan(x)
        except LectrError as exc:
            await self._refuse(x, exc)
            return
        try:
            await self._relay(x)
            self._record(x)
        finally:
            if x.info is not None and x.info.stream:
                self.streams.release()

    async def _authenticate(self, x: Exchange) -> None:
        """Headers (X-Lectr-* consumed, hop-by-hop dropped), the org of `X-Lectr-Key` from memory,
        its rate limit; then the request has an event."""
        assert self.directory is not None
        incoming = x.incoming = read_request_headers(x.scope["headers"], self.settings.max_header_bytes)
        if incoming.upgrade:  # (its body, if any, llhttp would leave unparsed as the new protocol's)
            raise UpgradeRefused()
        org = await self.directory.authenticate_fresh(incoming.lectr_key)
        if org is None:
            raise Unauthorized(
                "missing or invalid X-Lectr-Key header: send your org key as `X-Lectr-Key: lc_key_...`"
                if incoming.lectr_key is None
                else "invalid or revoked X-Lectr-Key"
            )
        x.org = org
        x.path = upstream_path(x.scope)
        self.rate_limiter.check(org.id)
        x.event = Event(
            org_id=org.id,
            created_at=x.created_at,
            provider="openai",
            endpoint=x.endpoint,
            status_code=0,
            provider_header=incoming.provider,
            feature=incoming.feature,
            task=incoming.task,
            request_id=os.urandom(16).hex(),  # uuid4's bytes, without building a UUID
        )

    async def _read(self, x: Exchange) -> None:
        """The body, whole (within `LECTR_MAX_BODY_BYTES`), and what the proxy needs from it."""
        assert x.incoming is not None and x.event is not None
        incoming, event = x.incoming, x.event
        x.raw = await read_body(x.receive, incoming.content_length, self.settings.max_body_bytes)
        event.request_bytes = len(x.raw)
        info = x.info = bodies.inspect(x.raw, incoming.content_type, x.endpoint)
        event.model, event.stream, event.message_count = info.model, info.stream, info.message_count
        event.end_user = incoming.end_user or info.end_user

    async def _plan(self, x: Exchange) -> None:
        """The provider (detection or `X-Lectr-Provider`), the hard budgets (from memory), and the
        attempts in order (routing rules and fallbacks); a stream takes one of the worker's slots."""
        assert self.directory is not None and self.budgets is not None
        assert x.incoming is not None and x.org is not None and x.event is not None and x.info is not None
        incoming, event, info = x.incoming, x.event, x.info
        found = detect(info.model, incoming.provider, b"anthropic-version" in incoming.special)
        if found.unknown and incoming.provider is not None:
            log.warning("invalid X-Lectr-Provider value; using openai")
        x.provider = event.provider = found.provider
        event.provider_unknown = found.unknown
        self.budgets.check(x.org.id, incoming.feature)
        if found.provider == "azure" and (not x.org.azure_endpoint or x.org.azure_refused) and incoming.lectr_key:
            # Set (or set right) a moment ago (`lectr org azure`)? Look once more before refusing.
            x.org = await self.directory.authenticate_reloaded(incoming.lectr_key) or x.org
        x.attempts = self._attempts(x)
        if info.stream:
            self.streams.acquire()

    def _attempts(self, x: Exchange) -> list[Attempt]:
        """The upstream requests to try, in order: one, unless routing rules or fallbacks say more."""
        assert self.directory is not None
        assert x.incoming is not None and x.org is not None and x.event is not None and x.info is not None
        incoming, info, provider = x.incoming, x.info, x.provider
        own_key = incoming.special.get(b"authorization")
        routing = self.directory.routing(x.org.id)
        plan = routing.plan(incoming.feature, incoming.task, info.model, provider) if routing and info.data else None
        asked = Target(provider, info.model or "")
        if plan is None:
            return [Attempt(asked, self._outbound(x, provider, info.model, own_key))]
        x.event.route_rule_id = plan.rule_id
        attempts: list[Attempt] = []
        refused: LectrError | None = None
        for target in plan.targets:
            # A provider key only ever goes to its own provider (see proxy/pipeline/routing.py).
            bearer = own_key if target.provider == provider else incoming.provider_auth.get(target.provider)
            if bearer is None:
                continue
            try:
                attempts.append(Attempt(target, self._outbound(x, target.provider, target.model, bearer)))
            except LectrError as exc:  # e.g. Azure without an endpoint: skip that target
                refused = refused or exc
        if attempts:
            return attempts
        if refused is not None:
            raise refused
        return [Attempt(asked, self._outbound(x, provider, info.model, own_key))]

    def _outbound(self, x: Exchange, provider: str, model: str | None, bearer: bytes | None) -> Outbound:
        """One upstream request: the adapter's URL and auth, the client's other headers, the body
        (with the usage option we add, and another model when routing says so)."""
        assert x.incoming is not None and x.org is not None and x.info is not None
        incoming, info, org = x.incoming, x.info, x.org
        special = incoming.special
        if bearer is not special.get(b"authorization"):
            special = {**special, b"authorization": bearer or b""}
        base_url, query = self.settings.base_urls.get(provider, ""), x.scope["query_string"]
        where = adapter_for(provider).target(Call(base_url, x.path, query, model, org, bearer, special))
        if model != info.model and model is not None:
            body = bodies.with_model(info, model, info.add_usage_option)
        elif info.add_usage_option:
            body = bodies.with_usage_option(x.raw, info)
        else:
            body = x.raw
        headers = incoming.forward + list(where.auth)
        encoding = b"identity" if info.stream else readable_accept_encoding(incoming.accept_encoding)
        if encoding is not None:
            headers.append((b"accept-encoding", encoding))
        # An Azure endpoint is the tenant's: its address is checked when connecting (no loopback,
        # private or metadata address: SPEC §3), unless its host is one the operator listed. Every
        # other URL is the operator's (`LECTR_*_BASE_URL`).
        guarded = provider == "azure" and org.azure_guarded and not self.settings.allow_private_upstreams
        try:
            dest = destination(where.url, guarded)
        except ValueError:
            raise BadRequest("the request path or query string cannot be forwarded") from None
        return Outbound(x.scope["method"].encode("ascii"), dest, headers, body)

    async def _relay(self, x: Exchange) -> None:
        """Send upstream (falling back while allowed) and relay the answer; cancel upstream if the
        client leaves. Then the event says how it went."""
        assert x.event is not None and x.info is not None
        event = x.event
        relay = Relay(event, x.info, x.started, self.settings.max_response_bytes)
        log_parts: list[str] = []
        extensions = x.scope.get("extensions") or {}
        alive, gone = extensions.get(server.CLIENT_ALIVE), extensions.get(server.CLIENT_GONE)
        if alive is not None and gone is not None:
            # Our HTTP/1.1 server: the transport asks `alive` while it waits on the provider, and a
            # stream checks `gone` after each chunk, instead of a watcher task per request (~25 % of
            # a whole answer's CPU, ~90 µs a stream; docs/PERFORMANCE.md).
            await self._attempt(x, relay, Client(x.send, alive, gone), log_parts)
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_disconnect, x.receive, nursery.cancel_scope, relay)
                try:
                    await self._attempt(x, relay, Client(x.send), log_parts)
                finally:
                    nursery.cancel_scope.cancel()
        if len(log_parts) > 1 or event.route_rule_id is not None:
            event.attempt_log = " ".join(log_parts)
        finished_stream = relay.sse is not None and relay.sse.done
        if relay.client_gone and not (relay.final_sent or finished_stream):
            event.status_code = 499
            if event.error_type is None:
                event.error_type = "client_disconnected"
                event.error_message = "the client closed the connection before the answer was complete"
        try:
            await relay.prepare_usage()  # a large answer's usage is read in a worker thread
            relay.finish()
        except Exception:  # a response we could not read usage from must still become an event
            log.exception("could not read the response of %s; recording the event without usage", event.endpoint)
        x.sent = x.attempts[event.attempts - 1].outbound

    async def _attempt(self, x: Exchange, relay: Relay, client: Client, log_parts: list[str]) -> None:
        """The attempts in order until one is relayed; an error of ours goes to the client as JSON."""
        assert self.link is not None
        event, attempts = relay.event, x.attempts
        try:
            for number, (target, outbound) in enumerate(attempts, 1):
                event.provider = target.provider
                if len(attempts) > 1 or event.route_rule_id is not None:
                    event.routed_model = target.model
                event.attempts = number
                try:
                    await relay.run(self.link, outbound, client, retryable=number < len(attempts))
                except Retry as retry:
                    log_parts.append(f"{target.model}@{target.provider}:{retry.status}")
                    continue
                except LectrError as exc:
                    log_parts.append(f"{target.model}@{target.provider}:{exc.status}")
                    raise
                log_parts.append(f"{target.model}@{target.provider}:{event.status_code}")
                break
        except LectrError as exc:
            if not relay.response_started:
                relay.final_sent = True
                await send_error(x.send, exc)
                event.status_code = exc.status
            event.error_type, event.error_message = exc.code, exc.message

    async def _refuse(self, x: Exchange, exc: LectrError) -> None:
        """The proxy answers itself (bad request, unknown key, budget reached, ...); the request is
        recorded when it got as far as having an event (it had an org)."""
        await send_error(x.send, exc)
        if x.event is None:
            self.metrics.observe(exc.status, time.perf_counter() - x.started, 0.0)
            return
        x.event.status_code, x.event.error_type, x.event.error_message = exc.status, exc.code, exc.message
        x.event.latency_ms = (time.perf_counter() - x.started) * 1000
        self._record(x)

    def _record(self, x: Exchange) -> None:
        """Count the request in the metrics, hand its event to the writer and, when export is on, to
        the telemetry exporter (with the client's trace headers and the upstream it went to, if
        any). Neither blocks: both queue it for their own task."""
        assert self.writer is not None and x.event is not None
        event = x.event
        self.metrics.observe(event.status_code, (event.latency_ms or 0) / 1000, (event.upstream_ms or 0) / 1000)
        self.writer.record(event)
        if self.telemetry is not None:
            self.telemetry.record(event, x.scope["headers"], x.sent.where.origin if x.sent is not None else None)


# Methods forwarded under /v1/ (SPEC §3). HEAD and OPTIONS are answered here; anything else (PUT,
# PATCH, CONNECT, TRACE, ...) is a 405: CONNECT would open a tunnel over the shared upstream pool
# and TRACE reflects the request (its headers: the provider key) back.
_FORWARDED = frozenset({"GET", "POST", "DELETE"})


async def _answer_method(method: str, send: Any) -> None:
    """What the proxy itself answers for a request it does not forward because of its method."""
    if method in ("HEAD", "OPTIONS"):
        status = 200 if method == "HEAD" else 204
        await send({"type": "http.response.start", "status": status, "headers": [ALLOW, (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    else:
        refused = MethodNotAllowed(
            f"method {method[:20]} is not allowed under /v1/: use GET, POST or DELETE", headers=[ALLOW]
        )
        await send_error(send, refused)


def create_app(settings: Settings | None = None) -> QuartTrio:
    """The app factory: `hypercorn --worker-class trio "proxy.app:create_app()"`."""
    settings = settings or Settings.from_env()
    configure_logging(settings)
    _no_server_headers()
    if settings.http1 == "lean":
        server.install(limits=server.Limits(settings.max_connections, settings.body_timeout))
    else:
        server.uninstall()
    app = QuartTrio("lectr")
    # Give the writer time to drain on shutdown before background tasks are cancelled.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 30
    proxy = Proxy(settings)
    app.extensions["lectr"] = proxy

    @app.before_serving
    async def start() -> None:
        await proxy.start(app.nursery)

    @app.after_serving
    async def stop() -> None:
        await proxy.stop()

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        directory, writer = proxy.directory, proxy.writer
        checks = {
            "keys_loaded": bool(directory and directory.loaded),
            "database": bool(writer and writer.statistics().healthy and directory and directory.last_error is None),
            "writer_dropped": writer.statistics().dropped if writer else None,  # reported; see /metrics
        }
        ready = bool(checks["keys_loaded"] and checks["database"])
        return _json({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        text = await proxy.render_metrics()
        return Response(text, 200, {"content-type": "text/plain; version=0.0.4"})

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        error = NotFound("unknown path: the proxy serves the OpenAI-compatible API under /v1/")
        return Response(error.body(), error.status, {"content-type": "application/json"})

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return _json(
            {"error": {"message": "method not allowed", "type": "invalid_request_error", "code": "method_not_allowed"}},
            405,
        )

    @app.errorhandler(500)
    async def internal(_: Exception) -> Response:
        return _json({"error": {"message": "internal error", "type": "internal_error", "code": "internal_error"}}, 500)

    app.asgi_app = proxy.asgi(app.asgi_app)  # type: ignore[method-assign]
    return app


def _no_server_headers() -> None:
    """Make Hypercorn add no `date`/`server` headers even when started without our config file.

    The client must get the provider's headers and nothing else (the provider sends its own
    `date`). `proxy/hypercorn_config.py` says so too; this covers a bare `hypercorn ...
    "proxy.app:create_app()"`, where these are Config class defaults read at each response.
    An explicit setting in a config file (an instance attribute) still wins.
    """
    from hypercorn.config import Config

    Config.include_date_header = False
    Config.include_server_header = False


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, {"content-type": "application/json"})
