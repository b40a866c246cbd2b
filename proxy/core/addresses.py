"""Where the proxy may connect for a tenant: the Azure endpoint rule and the address rule (SPEC §3).

An org's Azure endpoint is tenant input that decides where the proxy opens connections, so it is
the one way a tenant could point the proxy at an internal service (SSRF). Two rules, both pure:

- the endpoint rule (`azure_endpoint`), applied where an endpoint is set (`lectr org azure`, the
  dashboard) and again to what is stored, once per directory load: `https://<resource>.openai.azure.com`
  exactly, or `http(s)://` a host the operator lists in `LECTR_AZURE_ALLOWED_HOSTS` (host names,
  `.suffixes`, IP literals), with an optional port and path; never user info, query or fragment;
- the address rule (`address_forbidden`), applied by the transport when it connects for a
  guarded destination (an Azure endpoint the operator did not list): no loopback, private,
  link-local, unspecified, multicast, reserved, CGNAT or metadata address, nor those written as
  IPv4-mapped, 6to4 or NAT64 IPv6 addresses. URLs from the operator (`LECTR_*_BASE_URL`, listed
  hosts) are not guarded: their private addresses are the operator's choice.

A webhook URL (SPEC §9) is the same kind of tenant input: `webhook_url` holds it to `https://` on
a public address (`http://` and internal addresses only with `LECTR_ALLOW_PRIVATE_UPSTREAMS=1`),
checked where it is set and again, through the same address rule, by the transport at connect.

Messages never repeat the URL: it may hold a password (user info) or a token (query).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_HOSTS_VARIABLE = "LECTR_AZURE_ALLOWED_HOSTS"

RULE = (
    "an Azure endpoint must be https://<resource>.openai.azure.com (no port, path, user info, query or"
    f" fragment); for your own gateway, the operator lists its host in {ALLOWED_HOSTS_VARIABLE}"
    " (comma-separated host names or .suffixes), then http(s)://<that host>[:port][/path] is accepted"
)

# One DNS label of an Azure resource name: letters, digits, inner hyphens (Azure allows 2-64
# characters; DNS caps a label at 63).
_AZURE_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.openai\.azure\.com")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 3986 path characters, minus "@" (which only ever confuses a reader about the host).
_PATH = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:%-]*)*")
# What urlsplit silently drops or that browsers and parsers read differently: refused outright.
_UNSAFE = frozenset(' \t\r\n\\<>"{}|^`')

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# Cloud metadata and link-local service addresses. Each is refused by the broader checks below
# already; listed so that a change in what `ipaddress` calls private never reopens them.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.169.253",  # AWS DNS
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::253",
    )
)


class EndpointRefused(ValueError):
    """An Azure endpoint outside the rule; the message gives the reason and the rule, never the URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the Azure endpoint is refused ({reason}): {RULE}")
        self.reason = reason


class AzureEndpoint(NamedTuple):
    url: str  # normalised: lower-case scheme and host, no trailing slash
    operator_approved: bool  # on a listed host: the address rule does not apply


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """`LECTR_AZURE_ALLOWED_HOSTS`: comma-separated host names, `.suffixes` (any subdomain, not the
    name itself) or IP literals (IPv6 with or without brackets). ValueError on anything else, so a
    typo stops the start instead of silently allowing nothing (or too much)."""
    hosts: list[str] = []
    for item in raw.split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        ip = _ip(entry.removeprefix("[").removesuffix("]"))
        if ip is not None:
            hosts.append(ip.compressed)
        elif entry.startswith(".") and _is_hostname(entry[1:]):
            hosts.append(entry)
        elif _is_hostname(entry):
            hosts.append(entry)
        else:
            raise ValueError(
                f"{ALLOWED_HOSTS_VARIABLE}: {entry[:100]!r} is not a host name, a .suffix or an IP address"
                " (no scheme, port or path)"
            )
    return tuple(dict.fromkeys(hosts))


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether `host` (as `urlsplit` gives it: lower case, no brackets) is one the operator listed.
    IP literals match only an equal IP entry, never a suffix."""
    host = host.lower()
    ip = _ip(host)
    if ip is not None:
        return ip.compressed in allowed_hosts
    if not _is_hostname(host):
        return False
    return any(host == entry or (entry[0] == "." and host.endswith(entry)) for entry in allowed_hosts)


def azure_endpoint(endpoint: str, allowed_hosts: tuple[str, ...] = ()) -> AzureEndpoint:
    """The endpoint, normalised, if the rule allows it; `EndpointRefused` otherwise."""
    text = endpoint.strip()
    if not text:
        raise EndpointRefused("it is empty")
    if not text.isascii() or not text.isprintable() or any(c in _UNSAFE for c in text):
        raise EndpointRefused("it contains characters a URL cannot have")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not text[len(scheme) :].startswith("://"):
        raise EndpointRefused("it is not an http(s) URL")
    if "@" in parts.netloc:
        raise EndpointRefused("it has user info")
    if "?" in text:
        raise EndpointRefused("it has a query")
    if "#" in text:
        raise EndpointRefused("it has a fragment")
    host = parts.hostname or ""
    if not host:
        raise EndpointRefused("it has no host")
    try:
        port = parts.port
    except ValueError:
        raise EndpointRefused("its port is not a number from 1 to 65535") from None
    if port == 0:
        raise EndpointRefused("its port is not a number from 1 to 65535")
    path = parts.path
    if host_allowed(host, allowed_hosts):
        if not _PATH.fullmatch(path):
            raise EndpointRefused("its path has characters that are not allowed")
        ip = _ip(host)
        if ip is not None:
            host = ip.compressed  # one spelling, the one listed
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc = f"{netloc}:{port}"
        return AzureEndpoint(f"{scheme}://{netloc}{path.rstrip('/')}", True)
    if not _AZURE_HOST.fullmatch(host):
        raise EndpointRefused(f"its host is not <resource>.openai.azure.com and not listed in {ALLOWED_HOSTS_VARIABLE}")
    if scheme != "https":
        raise EndpointRefused("Azure endpoints use https")
    if parts.netloc.lower() != host:  # any port, even :443, or an empty one ("host:")
        raise EndpointRefused("Azure endpoints have no port")
    if path not in ("", "/"):
        raise EndpointRefused("Azure endpoints have no path: the proxy adds /openai/deployments/...")
    return AzureEndpoint(f"https://{host}", False)


class WebhookRefused(ValueError):
    """A webhook URL outside SPEC §9's rule; the message gives the reason, never the URL (a Slack
    webhook's path is its secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the webhook URL is refused ({reason}): it must be https:// to a public address; http:// and"
            " loopback, private, link-local or metadata addresses need LECTR_ALLOW_PRIVATE_UPSTREAMS=1"
            " (set by the operator)"
        )
        self.reason = reason


def _resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def webhook_url(
    url: str, allow_private: bool = False, resolve: Callable[[str, int], list[str]] = _resolve
) -> str:
    """The webhook URL, stripped, if SPEC §9's rule allows it; `WebhookRefused` otherwise. Unless
    `allow_private`, its host must resolve, and every address it resolves to must be public."""
    text = url.strip()
    if not text:
        raise WebhookRefused("it is empty")
    if len(text) > 2000:
        raise WebhookRefused("it is longer than 2000 characters")
    if not text.isascii() or not text.isprintable() or any(c in _UNSAFE for c in text):
        raise WebhookRefused("it contains characters a URL cannot have")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not text[len(scheme) :].startswith("://"):
        raise WebhookRefused("it is not an http(s) URL")
    if scheme == "http" and not allow_private:
        raise WebhookRefused("it is http://, not https://")
    if "@" in parts.netloc:
        raise WebhookRefused("it has user info")
    if "#" in text:
        raise WebhookRefused("it has a fragment")
    host = parts.hostname or ""
    if not host:
        raise WebhookRefused("it has no host")
    try:
        given = parts.port
    except ValueError:
        raise WebhookRefused("its port is not a number from 1 to 65535") from None
    if given == 0:
        raise WebhookRefused("its port is not a number from 1 to 65535")
    port = given or (443 if scheme == "https" else 80)
    if allow_private:
        return text
    ip = _ip(host)
    if ip is not None:
        addresses = [ip.compressed]
    elif not _is_hostname(host):
        raise WebhookRefused("its host is not a valid name")
    else:
        try:
            addresses = resolve(host, port)
        except OSError:
            raise WebhookRefused("its host name does not resolve") from None
    if not addresses or any(address_forbidden(a) for a in addresses):
        raise WebhookRefused("its host is a loopback, private, link-local or metadata address")
    return text


def address_forbidden(address: str) -> bool:
    """Whether the proxy must not connect to `address` (an IP as `getaddrinfo` gives it, IPv6 maybe
    with a %scope) for a tenant. Anything that does not parse is forbidden."""
    ip = _ip(address)
    return ip is None or _forbidden(ip)


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach that address: judge it instead.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return _forbidden(embedded)
        if ip.teredo is not None or ip in _NAT64_LOCAL or ip.is_site_local:
            return True
    elif ip in _CGNAT:
        return True
    if ip in _METADATA:
        return True
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified:
        return True
    if ip.is_multicast or ip.is_reserved:
        return True
    # What is left and still not global: documentation, benchmarking and other special ranges.
    return not ip.is_global


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_hostname(text: str) -> bool:
    # The last label of a name has a letter (so "127.1" or "1.2.3" is never a name, nor a suffix).
    return len(text) <= 253 and bool(_HOSTNAME.fullmatch(text)) and not text.rsplit(".", 1)[-1].isdigit()
