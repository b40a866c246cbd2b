"""SSRF through the Azure endpoint (issue 14, point 2; SPEC §3), with real sockets and the real proxy.

An org's Azure endpoint is tenant input that decides where the proxy connects. Before the fix,
`lectr org azure acme --endpoint 'http://127.0.0.1:PORT/internal/admin/secret#'` was accepted and
a request with `X-Lectr-Provider: azure` reached that address, its answer relayed to the tenant.

- where it is set (the `lectr` command, as a subprocess): only `https://<resource>.openai.azure.com`,
  or `http(s)://` a host the operator lists in `LECTR_AZURE_ALLOWED_HOSTS`; never user info, query
  or fragment; refusals go to stderr with a non-zero exit and say how to allow a gateway;
- where it is used (a proxy process): an endpoint written to the database before the rule (here:
  directly, bypassing `set_azure`) is refused with a 400 JSON error and the address is never
  contacted; a listed gateway host is reached;
- when connecting (`LectrTransport`): a guarded destination never connects to a loopback, private,
  link-local or metadata address, whatever name leads there, and never looks the name up twice.

"The internal service" is a local HTTP server that counts every request it receives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import trio

from proxy.http.transport import LectrTransport, Outbound, Timeouts, destination
from tests.conftest import ProxyProcess, proxy_env
from tests.fakes import FakeProviders
from tests.security.conftest import PROVIDER_KEY, assert_json_error

SECRET_BODY = b"internal-admin-secret-0451"
CHAT = {"model": "my-deployment", "messages": [{"role": "user", "content": "hi"}]}
LECTR = str(Path(sys.executable).parent / "lectr")


class _Internal(BaseHTTPRequestHandler):
    """Stands for an internal service: answers anything with a chat completion holding a secret."""

    protocol_version = "HTTP/1.1"
    server: InternalService

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0") or 0))
        with self.server.lock:
            self.server.paths.append(self.path)
        payload = json.dumps(
            {
                "id": "chatcmpl-internal",
                "object": "chat.completion",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": SECRET_BODY.decode()},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = _answer  # noqa: N815 (http.server's naming)

    def log_message(self, *args: Any) -> None:
        pass


class InternalService(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Internal)
        self.lock = threading.Lock()
        self.paths: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.paths)


@pytest.fixture(scope="module")
def internal() -> Iterator[InternalService]:
    server = InternalService()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def strict_proxy(pg_url: str, fakes: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy whose operator lists one gateway host (`localhost`), not 127.0.0.1."""
    data = tmp_path_factory.mktemp("ssrf-proxy")
    server = ProxyProcess(proxy_env(pg_url, fakes, data, LECTR_AZURE_ALLOWED_HOSTS="localhost"), data / "proxy.log")
    server.start()
    yield server
    server.stop()


def lectr_org_azure(
    pg_url: str, data_dir: Path, org: str, endpoint: str, allowed_hosts: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`lectr org azure ORG --endpoint ENDPOINT` as an operator runs it, on the test database."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LECTR_")}
    env.update(DATABASE_URL=pg_url, LECTR_DATA_DIR=str(data_dir))
    if allowed_hosts is not None:
        env["LECTR_AZURE_ALLOWED_HOSTS"] = allowed_hosts
    command = [LECTR, "org", "azure", org, "--endpoint", endpoint]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def stored_endpoint(db: psycopg.Connection[Any], org_id: int) -> str | None:
    row = db.execute("SELECT azure_endpoint FROM orgs WHERE id = %s", (org_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def assert_refused(done: subprocess.CompletedProcess[str], *hidden: str) -> None:
    assert done.returncode != 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    # The message says what is allowed and how an operator allows a gateway host.
    assert "https://<resource>.openai.azure.com" in done.stderr, done.stderr
    assert "LECTR_AZURE_ALLOWED_HOSTS" in done.stderr, done.stderr
    for secret in hidden:
        assert secret not in done.stderr and secret not in done.stdout


# -- where the endpoint is set --------------------------------------------------------------


BAD_ENDPOINTS = [
    pytest.param("http://127.0.0.1:{port}/internal/admin/secret#", None, id="the-issue-url"),
    pytest.param("http://127.0.0.1:{port}", None, id="http-ip-literal-not-listed"),
    pytest.param("https://127.0.0.1", None, id="https-ip-literal-not-listed"),
    pytest.param("https://169.254.169.254/latest/meta-data", None, id="metadata-ip"),
    pytest.param("https://[::ffff:127.0.0.1]", None, id="ipv4-mapped-loopback"),
    pytest.param("https://localhost", None, id="localhost-not-listed"),
    pytest.param("http://res.openai.azure.com", None, id="azure-over-plain-http"),
    pytest.param("https://user:hunter2pw@res.openai.azure.com", None, id="userinfo"),
    pytest.param("https://res.openai.azure.com/?x=1", None, id="query"),
    pytest.param("https://res.openai.azure.com/#frag", None, id="fragment"),
    pytest.param("https://res.openai.azure.com:8443", None, id="azure-with-port"),
    pytest.param("https://res.openai.azure.com/internal/admin", None, id="azure-with-path"),
    pytest.param("https://evil.com/.openai.azure.com", None, id="azure-name-in-the-path"),
    pytest.param("https://x.openai.azure.com.evil.com", None, id="azure-name-as-a-prefix"),
    pytest.param("https://res.openai.azure.com\\@127.0.0.1", None, id="backslash-userinfo-confusion"),
    # A listed host still gets no user info, query or fragment.
    pytest.param("http://127.0.0.1:{port}/internal/admin/secret#", "127.0.0.1", id="listed-host-fragment"),
    pytest.param("http://admin:hunter2pw@127.0.0.1:{port}", "127.0.0.1", id="listed-host-userinfo"),
    pytest.param("http://127.0.0.1:{port}/gw?token=1", "127.0.0.1", id="listed-host-query"),
]


@pytest.mark.parametrize(("endpoint", "allowed_hosts"), BAD_ENDPOINTS)
def test_lectr_org_azure_refuses_endpoints_outside_the_rule(
    endpoint: str,
    allowed_hosts: str | None,
    db: psycopg.Connection[Any],
    new_org: Any,
    pg_url: str,
    tmp_path: Path,
    internal: InternalService,
) -> None:
    """Each form is refused with the rule in the message, nothing stored, no secret echoed."""
    org, _ = new_org("ssrf-cli")
    done = lectr_org_azure(pg_url, tmp_path, org.name, endpoint.format(port=internal.port), allowed_hosts)
    assert_refused(done, "hunter2pw")
    assert stored_endpoint(db, org.id) is None


def test_lectr_org_azure_accepts_a_real_endpoint_and_nothing_that_only_looks_like_one(
    db: psycopg.Connection[Any], new_org: Any, pg_url: str, tmp_path: Path
) -> None:
    org, _ = new_org("ssrf-real")
    done = lectr_org_azure(pg_url, tmp_path, org.name, "https://My-Resource.openai.azure.com/")
    assert done.returncode == 0, done.stderr
    assert stored_endpoint(db, org.id) == "https://my-resource.openai.azure.com"
    for look_alike in ("https://evil.com/.openai.azure.com", "https://my-resource.openai.azure.com.evil.com"):
        assert_refused(lectr_org_azure(pg_url, tmp_path, org.name, look_alike))
        assert stored_endpoint(db, org.id) == "https://my-resource.openai.azure.com"  # unchanged


def test_a_gateway_host_is_accepted_only_when_the_operator_lists_it_and_is_then_reached(
    db: psycopg.Connection[Any],
    new_org: Any,
    pg_url: str,
    tmp_path: Path,
    internal: InternalService,
    strict_proxy: ProxyProcess,
) -> None:
    """`localhost` resolves to loopback, but the operator listed it: operator-approved, reached."""
    org, key = new_org("ssrf-gateway")
    endpoint = f"http://LOCALHOST:{internal.port}/gw/"
    assert_refused(lectr_org_azure(pg_url, tmp_path, org.name, endpoint))
    assert_refused(lectr_org_azure(pg_url, tmp_path, org.name, endpoint, allowed_hosts="gw.example.com,127.0.0.1"))
    assert stored_endpoint(db, org.id) is None
    done = lectr_org_azure(pg_url, tmp_path, org.name, endpoint, allowed_hosts="gw.example.com, localhost")
    assert done.returncode == 0, done.stderr
    assert stored_endpoint(db, org.id) == f"http://localhost:{internal.port}/gw"

    before = internal.count
    response = httpx.post(
        f"{strict_proxy.url}/v1/chat/completions",
        json=CHAT,
        headers={"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Provider": "azure"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert internal.count == before + 1
    assert internal.paths[-1].startswith("/gw/openai/deployments/my-deployment/chat/completions?api-version=")


# -- where the endpoint is used: stored before the rule existed ------------------------------


POISONED = [
    pytest.param("http://127.0.0.1:{port}/internal/admin/secret#", id="the-issue-url"),
    pytest.param("http://127.0.0.1:{port}", id="ip-literal-not-listed"),
    pytest.param("http://[::ffff:127.0.0.1]:{port}", id="ipv4-mapped-loopback"),
    pytest.param("http://admin:hunter2pw@localhost:{port}", id="listed-host-with-userinfo"),
    pytest.param("http://localhost:{port}/internal?token=hunter2pw", id="listed-host-with-query"),
    pytest.param("http://localhost:{port}/internal#hunter2pw", id="listed-host-with-fragment"),
]


@pytest.mark.parametrize("endpoint", POISONED)
def test_an_endpoint_stored_before_the_rule_is_refused_and_never_contacted(
    endpoint: str, db: psycopg.Connection[Any], new_org: Any, internal: InternalService, strict_proxy: ProxyProcess
) -> None:
    org, key = new_org("ssrf-poisoned")
    # Written as an old version (or a hand-edited database) would have: no set_azure, no rule.
    db.execute("UPDATE orgs SET azure_endpoint = %s WHERE id = %s", (endpoint.format(port=internal.port), org.id))
    before = internal.count
    headers = {"X-Lectr-Key": key, "Authorization": f"Bearer {PROVIDER_KEY}", "X-Lectr-Provider": "azure"}
    for _ in range(2):  # the first request loads the new key; the second is served from memory
        response = httpx.post(f"{strict_proxy.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)
        error = assert_json_error(response.status_code, response.headers, response.content, 400)
        assert "lectr org azure" in error["message"] and "LECTR_AZURE_ALLOWED_HOSTS" in error["message"]
        for secret in ("hunter2pw", "internal", SECRET_BODY.decode()):
            assert secret not in response.text
    assert internal.count == before, internal.paths[before:]


# -- when connecting: the address rule ---------------------------------------------------------


TIMEOUTS = Timeouts(2.0, 2.0, 2.0)


async def _post(transport: LectrTransport, url: str, guarded: bool) -> int:
    reply = await transport.open(Outbound(b"POST", destination(url, guarded), [], b"{}"), TIMEOUTS)
    try:
        while await reply.receive():
            pass
    finally:
        await reply.aclose()
    return reply.status_code


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://localhost:{port}/internal/admin", id="a-name-for-loopback"),
        pytest.param("http://127.0.0.1:{port}/internal/admin", id="ipv4-loopback"),
        pytest.param("http://[::ffff:127.0.0.1]:{port}/internal/admin", id="ipv4-mapped-loopback"),
        pytest.param("http://admin:hunter2pw@localhost:{port}/internal/admin?token=hunter2pw", id="secrets-not-echoed"),
    ],
)
async def test_a_guarded_destination_never_connects_to_loopback(url: str, internal: InternalService) -> None:
    url = url.format(port=internal.port)
    transport = LectrTransport()
    before = internal.count
    try:
        with pytest.raises(httpx.ConnectError, match="not allowed") as caught:
            await _post(transport, url, guarded=True)
        assert internal.count == before
        message = str(caught.value)
        assert "hunter2pw" not in message and "/internal" not in message and "admin" not in message
        assert transport.connections_opened == 0
        # The same URL unguarded (an operator's LECTR_*_BASE_URL) is reached: the guard is the difference.
        assert await _post(transport, url, guarded=False) == 200
        assert internal.count == before + 1
        # That connection is idle in the pool now; a guarded request to the same origin must not
        # reuse it (its address was never checked): the pool keys keep the two apart.
        assert transport.idle_count() == 1
        with pytest.raises(httpx.ConnectError, match="not allowed"):
            await _post(transport, url, guarded=True)
        assert internal.count == before + 1 and transport.idle_count() == 1
    finally:
        await transport.aclose()


class _Resolver(trio.abc.HostnameResolver):
    """DNS under the test's control: each lookup of a name gets the next answer of its list."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.lookups = 0

    async def getaddrinfo(self, host: bytes | str | None, port: Any, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[Any]:  # fmt: skip
        addresses = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        return [
            (trio.socket.AF_INET, trio.socket.SOCK_STREAM, trio.socket.IPPROTO_TCP, "", (address, int(port)))
            for address in addresses
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_a_guarded_destination_is_refused_if_any_address_of_its_name_is_private(
    internal: InternalService,
) -> None:
    """A name with a public and a loopback address: refused, not tried address by address."""
    resolver = _Resolver([["8.8.8.8", "127.0.0.1"]])
    trio.socket.set_custom_hostname_resolver(resolver)
    transport = LectrTransport()
    before = internal.count
    try:
        with pytest.raises(httpx.ConnectError, match="not allowed"):
            await _post(transport, f"http://gateway.example:{internal.port}/", guarded=True)
    finally:
        await transport.aclose()
    assert internal.count == before and resolver.lookups == 1
    assert transport.connections_opened == 0


async def test_a_guarded_destination_connects_to_the_address_it_checked(internal: InternalService) -> None:
    """DNS rebinding: the first lookup says public, any later one says loopback. The guarded
    connection goes to the checked address (here unreachable: no upstream answer), never to a
    second lookup's answer."""
    resolver = _Resolver([["8.8.8.8"], ["127.0.0.1"]])  # a global address that is not ours, then ours
    trio.socket.set_custom_hostname_resolver(resolver)
    transport = LectrTransport()
    before = internal.count
    try:
        with pytest.raises((httpx.ConnectError, httpx.ConnectTimeout)) as caught:
            await transport.open(
                Outbound(b"POST", destination(f"http://rebind.example:{internal.port}/", True), [], b"{}"),
                Timeouts(1.0, 1.0, 1.0),
            )
        assert "not allowed" not in str(caught.value)  # 8.8.8.8 passed the check, then failed to connect
    finally:
        await transport.aclose()
    assert resolver.lookups == 1
    assert internal.count == before
