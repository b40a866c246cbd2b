"""The Azure endpoint rule and the address rule (proxy/core/addresses.py, SPEC §3), as tables."""

from __future__ import annotations

import pytest

from proxy.core.addresses import (
    EndpointRefused,
    address_forbidden,
    azure_endpoint,
    host_allowed,
    parse_allowed_hosts,
)
from proxy.core.config import Settings

GATEWAYS = ("gw.corp.example", ".internal.example", "127.0.0.1", "::1")

# (endpoint, allowed hosts, normalised URL and operator-approved, or None when refused)
ENDPOINTS: list[tuple[str, tuple[str, ...], tuple[str, bool] | None]] = [
    # Azure itself: https, <resource>.openai.azure.com, nothing else
    ("https://res.openai.azure.com", (), ("https://res.openai.azure.com", False)),
    ("https://res.openai.azure.com/", (), ("https://res.openai.azure.com", False)),
    ("  HTTPS://My-Res.OpenAI.Azure.com/  ", (), ("https://my-res.openai.azure.com", False)),
    ("https://a.openai.azure.com", (), ("https://a.openai.azure.com", False)),
    ("http://res.openai.azure.com", (), None),
    ("https://res.openai.azure.com:443", (), None),
    ("https://res.openai.azure.com:", (), None),
    ("https://res.openai.azure.com/openai", (), None),
    ("https://res.openai.azure.com//", (), None),
    ("https://res.openai.azure.com?", (), None),
    ("https://res.openai.azure.com/?api-version=1", (), None),
    ("https://res.openai.azure.com#", (), None),
    ("https://u:p@res.openai.azure.com", (), None),
    ("https://@res.openai.azure.com", (), None),
    ("https://openai.azure.com", (), None),
    ("https://a.b.openai.azure.com", (), None),
    ("https://-res.openai.azure.com", (), None),
    ("https://res.openai.azure.com.", (), None),
    ("https://x.openai.azure.com.evil.com", (), None),
    ("https://evil.com/.openai.azure.com", (), None),
    ("https://evil.com?.openai.azure.com", (), None),
    ("https://evil.com#.openai.azure.com", (), None),
    ("https://evil.com\\.openai.azure.com", (), None),
    ("https://res.openai.azure.com\\@evil.com", (), None),
    ("https://res.openai.azure.com%2f@evil.com", (), None),
    ("https://res.openai.azure.com\t", (), ("https://res.openai.azure.com", False)),  # stripped at the ends
    ("https://res.openai.az\ture.com", (), None),
    ("https://rés.openai.azure.com", (), None),
    ("https://res.openai.azure.us", (), None),
    ("ftp://res.openai.azure.com", (), None),
    ("res.openai.azure.com", (), None),
    ("//res.openai.azure.com", (), None),
    ("https:res.openai.azure.com", (), None),
    ("", (), None),
    ("not a url", (), None),
    # Internal addresses, unless listed
    ("http://127.0.0.1:8080/internal/admin/secret#", (), None),
    ("http://127.0.0.1:8080", (), None),
    ("https://169.254.169.254", (), None),
    ("http://localhost", (), None),
    ("http://[::1]:8080", (), None),
    ("http://127.1:8080", GATEWAYS, None),  # another spelling of a listed IP is not the listed IP
    ("http://2130706433", GATEWAYS, None),
    ("http://0x7f.0.0.1", GATEWAYS, None),
    # Listed hosts: http or https, a port and a path; still no user info, query or fragment
    ("http://127.0.0.1:8080", GATEWAYS, ("http://127.0.0.1:8080", True)),
    ("http://127.0.0.1:8080/gw/", GATEWAYS, ("http://127.0.0.1:8080/gw", True)),
    ("http://[::1]:8080", GATEWAYS, ("http://[::1]:8080", True)),
    ("http://[0:0::1]", GATEWAYS, ("http://[::1]", True)),
    ("https://GW.corp.example:8443/azure", GATEWAYS, ("https://gw.corp.example:8443/azure", True)),
    ("https://a.b.internal.example", GATEWAYS, ("https://a.b.internal.example", True)),
    ("https://internal.example", GATEWAYS, None),  # a .suffix covers subdomains, not the name
    ("https://evilinternal.example", GATEWAYS, None),
    ("https://internal.example.evil.com", GATEWAYS, None),
    ("https://gw.corp.example.evil.com", GATEWAYS, None),
    ("https://evil.com/gw.corp.example", GATEWAYS, None),
    ("http://127.0.0.1:8080/internal/admin/secret#", GATEWAYS, None),
    ("http://admin:pw@127.0.0.1:8080", GATEWAYS, None),
    ("http://127.0.0.1:8080/gw?token=x", GATEWAYS, None),
    ("http://127.0.0.1:0", GATEWAYS, None),
    ("http://127.0.0.1:65536", GATEWAYS, None),
    ("http://127.0.0.1:http", GATEWAYS, None),
    ("http://127.0.0.1/a b", GATEWAYS, None),
    ("http://127.0.0.1/a@b", GATEWAYS, None),
    # A listed Azure-shaped host follows the listed-host rule, and is operator-approved
    ("http://res.openai.azure.com/x", (".openai.azure.com",), ("http://res.openai.azure.com/x", True)),
]


@pytest.mark.parametrize(("endpoint", "allowed", "expected"), ENDPOINTS)
def test_azure_endpoint_rule(endpoint: str, allowed: tuple[str, ...], expected: tuple[str, bool] | None) -> None:
    if expected is None:
        with pytest.raises(EndpointRefused) as refused:
            azure_endpoint(endpoint, allowed)
        message = str(refused.value)
        assert "https://<resource>.openai.azure.com" in message and "LECTR_AZURE_ALLOWED_HOSTS" in message
        # Never the URL or its parts: user info, path and query may hold secrets.
        assert not any(part in message for part in ("pw@", "secret", "token=", "admin", "evil", "8080"))
    else:
        checked = azure_endpoint(endpoint, allowed)
        assert (checked.url, checked.operator_approved) == expected
        assert azure_endpoint(checked.url, allowed) == checked  # normalised: stable when stored and read back


# (address as getaddrinfo gives it, forbidden for a tenant's upstream)
ADDRESSES = [
    # public
    ("8.8.8.8", False),
    ("20.42.65.92", False),
    ("2606:4700:4700::1111", False),
    ("::ffff:8.8.8.8", False),  # mapped, of a public address
    ("64:ff9b::808:808", False),  # NAT64 (DNS64 networks), of a public address
    ("2002:808:808::1", False),  # 6to4, of a public address
    # loopback, unspecified
    ("127.0.0.1", True),
    ("127.255.255.254", True),
    ("0.0.0.0", True),
    ("0.1.2.3", True),
    ("::1", True),
    ("::", True),
    # private, CGNAT, link-local, metadata
    ("10.0.0.1", True),
    ("172.16.0.1", True),
    ("172.31.255.255", True),
    ("192.168.1.1", True),
    ("100.64.0.1", True),
    ("100.127.255.254", True),
    ("100.100.100.200", True),
    ("169.254.169.254", True),
    ("169.254.170.2", True),
    ("169.254.0.1", True),
    ("192.0.0.192", True),
    ("fd00:ec2::254", True),
    ("fc00::1", True),
    ("fe80::1", True),
    ("fe80::1%eth0", True),
    ("fec0::1", True),  # site-local (deprecated, still routed internally by some)
    # multicast, broadcast, reserved, documentation, benchmarking
    ("224.0.0.1", True),
    ("239.255.255.250", True),
    ("255.255.255.255", True),
    ("240.0.0.1", True),
    ("192.0.2.1", True),
    ("198.18.0.1", True),
    ("ff02::1", True),
    ("2001:db8::1", True),
    ("100::1", True),
    # IPv6 forms of forbidden IPv4 addresses
    ("::ffff:127.0.0.1", True),
    ("::ffff:7f00:1", True),
    ("::ffff:169.254.169.254", True),
    ("::ffff:10.0.0.1", True),
    ("::127.0.0.1", True),  # IPv4-compatible (deprecated)
    ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::", True),  # 6to4 of 169.254.169.254
    ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::a00:1", True),  # local-use NAT64
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", True),  # Teredo
    # not an address at all
    ("localhost", True),
    ("", True),
    ("127.1", True),
]


@pytest.mark.parametrize(("address", "forbidden"), ADDRESSES)
def test_address_rule(address: str, forbidden: bool) -> None:
    assert address_forbidden(address) is forbidden


ALLOWED_HOSTS = [
    ("", ()),
    (" , ", ()),
    ("gw.example.com", ("gw.example.com",)),
    (
        " GW.example.com , .Corp.Example,127.0.0.1, [::1] ,0:0::1",
        ("gw.example.com", ".corp.example", "127.0.0.1", "::1"),
    ),
    ("localhost", ("localhost",)),
    ("http://gw.example.com", None),
    ("gw.example.com:8080", None),
    ("gw.example.com/path", None),
    ("*.example.com", None),
    (".", None),
    ("..example.com", None),
    ("gw .example.com", None),
]


@pytest.mark.parametrize(("raw", "expected"), ALLOWED_HOSTS)
def test_allowed_hosts_setting(raw: str, expected: tuple[str, ...] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="LECTR_AZURE_ALLOWED_HOSTS"):
            parse_allowed_hosts(raw)
        with pytest.raises(ValueError, match="LECTR_AZURE_ALLOWED_HOSTS"):
            Settings.from_env({"LECTR_AZURE_ALLOWED_HOSTS": raw})
    else:
        assert parse_allowed_hosts(raw) == expected
        assert Settings.from_env({"LECTR_AZURE_ALLOWED_HOSTS": raw}).azure_allowed_hosts == expected


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("gw.example.com", True),
        ("GW.EXAMPLE.COM", True),
        ("x.gw.example.com", False),
        ("a.corp.example", True),
        ("corp.example", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("127.0.0.2", False),
        ("1.corp.example", True),
    ],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, parse_allowed_hosts("gw.example.com,.corp.example,127.0.0.1,::1")) is allowed


def test_private_upstreams_setting() -> None:
    assert Settings.from_env({}).allow_private_upstreams is False
    assert Settings.from_env({"LECTR_ALLOW_PRIVATE_UPSTREAMS": "1"}).allow_private_upstreams is True
    assert Settings.from_env({"LECTR_ALLOW_PRIVATE_UPSTREAMS": "0"}).allow_private_upstreams is False
