"""Which URLs and addresses `http_get` may reach: owner prefixes matched on boundaries, and the IP rules.

A URL is read strictly before anything is compared: http or https only, no user name or password, a host
that is a real name or a canonical IP literal (the numeric shortcuts `2130706433`, `0x7f.1`, `127.1` and `0`
all mean 127.0.0.1 or 0.0.0.0 to the C resolver and are refused), and no `.`/`..` path segment in any
spelling (`%2e%2e`, an encoded `/` or `\\`), since a server would resolve it to a path the prefix never
allowed. A prefix then matches on scheme, host and port exactly and on whole path segments.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import unquote

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# The WHATWG URL rule: a host whose last label is a number is an IPv4 address, in whatever base.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Target(NamedTuple):
    """A checked URL: where to connect (scheme, host, port) and what to ask for there."""

    url: httpx.URL
    scheme: str
    host: str
    port: int
    path: str  # percent-encoded, as sent

    def __str__(self) -> str:
        return str(self.url)


class Prefix(NamedTuple):
    """An owner-allowed URL prefix, normalized like a `Target`."""

    scheme: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        return f"{self.scheme}://{_netloc(self.host, self.port, self.scheme)}{self.path}"

    def allows(self, target: Target) -> bool:
        """Same scheme, host and port, and the path equal to the prefix's or below it by whole segments."""
        if (self.scheme, self.host, self.port) != (target.scheme, target.host, target.port):
            return False
        if self.path.endswith("/") or target.path == self.path:
            return target.path.startswith(self.path)
        return target.path.startswith(self.path + "/")


def _netloc(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if _DEFAULT_PORTS[scheme] == port else f"{shown}:{port}"


def _check_host(host: str) -> str:
    if not host:
        raise ValueError("the URL has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host[:80]!r} is not a host name")
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        raise ValueError(f"{host[:80]!r} is not a canonical IP address (write it as four decimal parts)")
    return host.rstrip(".")


def _check_path(raw_path: str) -> None:
    for segment in raw_path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise ValueError("the URL's path has a '.' or '..' segment or an encoded slash")


def parse_target(text: str) -> Target:
    """A URL the model gave, checked and normalized; `ValueError` says what is wrong with it."""
    if len(text) > 4096:
        raise ValueError("the URL is longer than 4096 characters")
    if any(ch.isspace() or not ch.isprintable() for ch in text) or "\\" in text:
        raise ValueError("the URL has spaces, control characters or a backslash")
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ValueError(f"not a URL: {exc}") from exc
    if url.scheme not in _DEFAULT_PORTS:
        raise ValueError("only http:// and https:// URLs")
    if url.userinfo:
        raise ValueError("a URL with a user name or password is not allowed")
    host = _check_host(url.raw_host.decode("ascii"))
    port = url.port or _DEFAULT_PORTS[url.scheme]
    if not 0 < port < 65536:
        raise ValueError("the port must be from 1 to 65535")
    raw_path = url.raw_path.decode("ascii").partition("?")[0] or "/"
    _check_path(raw_path)
    return Target(url.copy_with(fragment=None), url.scheme, host, port, raw_path)


def parse_prefix(text: str) -> Prefix:
    """An owner's allowed prefix, like `https://api.example.com/v1/`; `ValueError` says what is wrong with it."""
    target = parse_target(text.strip())
    if target.url.query:
        raise ValueError("a prefix cannot have a query")
    return Prefix(target.scheme, target.host, target.port, target.path)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # IPv4 addresses carried inside IPv6 ones reach the IPv4 host: judge them by the IPv4 rules.
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why `http_get` may not connect to `ip`, or None when it may.

    Unspecified, multicast, broadcast and reserved addresses are never reachable; loopback, private,
    link-local (169.254.169.254, where clouds keep their metadata) and shared addresses only when the owner
    allows private addresses.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return "a Teredo tunnel address"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_problem(inner, allow_private)
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if ip.is_link_local:
        return None if allow_private else "a link-local address"
    if ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "a reserved address"
    if allow_private or ip.is_global:
        return None
    return "a private address"
