"""Where a webhook may go: URL checks against server-side request forgery (SSRF).

A webhook URL comes from a partner, and the service POSTs to it from inside
its own network. :func:`check_url` accepts only ``https`` (``http`` when
allowed), a plain host and port (no user name or password), and refuses the
destination when *any* address its host resolves to is not a public one:
loopback, private, link-local, multicast, reserved, unspecified, shared
(CGNAT), the cloud metadata address, and IPv6 forms that embed one of those
(IPv4-mapped/compatible, 6to4, Teredo, NAT64). Hosts are normalised first the
way browsers and ``inet_aton`` read them, so ``http://2130706433/``,
``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]`` and
``LOCALHOST.`` are all recognised as loopback.

The check runs when a webhook is registered and again before every send (DNS
can change in between); the sender then connects to exactly the addresses
checked here (see :mod:`smartsvc.webhooks.transport`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import idna

MAX_URL_LENGTH = 2048
# Resolving one name to more is unusual; bounding it bounds the work of a check.
MAX_ADDRESSES = 64

Resolver = Callable[[str, int], Iterable[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"https": 443, "http": 80}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_IPV4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_LOOPBACK_NAMES = ("127.0.0.1", "::1")


class UnsafeDestination(ValueError):
    """A webhook URL that must not be called; the message says why, naming ``url``."""


class DestinationUnresolvable(UnsafeDestination):
    """The URL's host did not resolve (now): unsafe to register, but may be a passing DNS failure."""


@dataclass(frozen=True)
class Destination:
    """A checked webhook destination: the normalised URL and the addresses to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def check_url(url: str, *, allow_private: bool, allow_http: bool, resolve: Resolver | None = None) -> Destination:
    """Check a webhook URL and resolve its host; raise :class:`UnsafeDestination` when refused.

    ``allow_http`` also accepts plain ``http``; ``allow_private`` lifts the
    address check (loopback etc.), nothing else. ``resolve(host, port)``
    returns IP address strings (default: the system resolver).
    """
    if not isinstance(url, str) or not url:
        raise UnsafeDestination("url: must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeDestination(f"url: must be at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        # Browsers and servers disagree about these; a URL that needs them is refused outright.
        raise UnsafeDestination("url: must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeDestination(f"url: is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed:
        hint = "" if allow_http else " (plain http only with SMARTSVC_WEBHOOK_ALLOW_HTTP=1)"
        raise UnsafeDestination(f"url: must be an https URL{hint}")
    if "@" in parts.netloc:
        raise UnsafeDestination("url: must not contain a user name or password")
    try:
        port = parts.port
    except ValueError:
        raise UnsafeDestination("url: the port must be a number between 1 and 65535") from None
    if port == 0:
        raise UnsafeDestination("url: the port must be a number between 1 and 65535")
    port = port or _DEFAULT_PORTS[scheme]

    host, literal = _normalise_host(parts.netloc, parts.hostname)
    if literal is not None:
        addresses: tuple[str, ...] = (str(literal),)
    elif host == "localhost" or host.endswith(".localhost"):
        addresses = _LOOPBACK_NAMES  # RFC 6761: always loopback, whatever a resolver says
    else:
        addresses = _resolve(host, port, resolve)
    if not allow_private:
        for address in addresses:
            reason = unsafe_reason(address)
            if reason:
                if literal is None:
                    where = f"{host} resolves to {address}, which"
                else:  # name the host as written, and what it reads as when that differs
                    where = host if parts.hostname == host else f"{parts.hostname} ({host})"
                raise UnsafeDestination(f"url: {where} is {reason}")

    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port == _DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    normalised = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    return Destination(url=normalised, scheme=scheme, host=host, port=port, addresses=addresses)


def unsafe_reason(address: str | IPAddress) -> str | None:
    """Why a webhook must not connect to this IP address (``"a private address"``...), or None."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for embedded, how in _embedded_ipv4(ip):
            reason = unsafe_reason(embedded)
            if reason:
                return f"{reason} ({how} {embedded})"
    if ip in _METADATA:
        return "the cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[tuple[ipaddress.IPv4Address, str]]:
    """The IPv4 addresses an IPv6 address carries (and reaches through a translator or tunnel)."""
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    if ip.ipv4_mapped is not None:
        found.append((ip.ipv4_mapped, "IPv4-mapped"))
    value = int(ip)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d, deprecated IPv4-compatible (not :: or ::1)
        found.append((ipaddress.IPv4Address(value & 0xFFFFFFFF), "IPv4-compatible"))
    if ip.sixtofour is not None:
        found.append((ip.sixtofour, "6to4 of"))
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [(server, "Teredo server"), (client, "Teredo client")]
    if any(ip in net for net in _NAT64):
        found.append((ipaddress.IPv4Address(value & 0xFFFFFFFF), "NAT64 of"))
    return found


def _normalise_host(netloc: str, hostname: str | None) -> tuple[str, IPAddress | None]:
    """The host in canonical form and, when it is an IP address written in any form, that address."""
    if not hostname:
        raise UnsafeDestination("url: has no host")
    if "[" in netloc:
        if "%" in hostname:
            raise UnsafeDestination("url: IPv6 zone ids are not allowed")
        try:
            v6 = ipaddress.IPv6Address(hostname)
        except ValueError:
            raise UnsafeDestination(f"url: [{hostname}] is not a valid IPv6 address") from None
        if v6.ipv4_mapped is not None:
            return str(v6.ipv4_mapped), v6.ipv4_mapped
        return str(v6), v6
    host = hostname.removesuffix(".")  # the DNS root: "example.com." is "example.com"
    try:
        # UTS 46 also folds full-width digits and dots, so "１２７.０.０.１" is read as 127.0.0.1.
        host = idna.encode(host, uts46=True).decode("ascii") if not host.isascii() else host.lower()
    except (idna.IDNAError, UnicodeError):
        raise UnsafeDestination(f"url: {hostname!r} is not a valid host name") from None
    labels = host.split(".")
    v4 = _parse_ipv4(labels)
    if v4 is not None:
        return str(v4), v4
    if _IPV4_PART.match(labels[-1]) or labels[-1].isdigit():
        # WHATWG URL: a host whose last label is a number must be an IPv4 address.
        raise UnsafeDestination(f"url: {hostname!r} is not a valid IPv4 address or host name")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise UnsafeDestination(f"url: {hostname!r} is not a valid host name")
    return host, None


def _parse_ipv4(labels: list[str]) -> ipaddress.IPv4Address | None:
    """IPv4 the way ``inet_aton`` reads it: 1-4 parts, each decimal, octal (0...) or hex (0x...)."""
    if not 1 <= len(labels) <= 4 or not all(_IPV4_PART.match(label) for label in labels):
        return None
    numbers = []
    for label in labels:
        if label[:2].lower() == "0x":
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label[0] == "0":
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeDestination(f"url: {'.'.join(labels)} is not a valid IPv4 address")
    value = 0
    for n in head:
        value = value * 256 + n
    value = (value << (8 * (5 - len(numbers)))) | last
    return ipaddress.IPv4Address(value)


def system_resolve(host: str, port: int) -> list[str]:
    """The IP addresses of ``host`` from the system resolver (``getaddrinfo``), in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _resolve(host: str, port: int, resolve: Resolver | None) -> tuple[str, ...]:
    try:
        answers = list((resolve or system_resolve)(host, port))
    except (OSError, UnicodeError) as exc:
        raise DestinationUnresolvable(f"url: {host} does not resolve ({exc})") from None
    addresses: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(str(answer).split("%", 1)[0])
        except ValueError:
            raise DestinationUnresolvable(f"url: {host} resolves to {answer!r}, not an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # connect over IPv4 to what the mapped form names
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise DestinationUnresolvable(f"url: {host} does not resolve to any address")
    if len(addresses) > MAX_ADDRESSES:
        raise UnsafeDestination(f"url: {host} resolves to more than {MAX_ADDRESSES} addresses")
    return tuple(addresses)
