"""Browser-borne requests: refuse Host names piagent does not answer to, and requests from other sites' pages.

A web page the owner visits can send requests to piagent on the LAN; with keys off (the LAN default)
nothing else stops it. Two checks, in a pure ASGI middleware placed outermost, like Ollama's:

- **Host** (DNS rebinding: a page whose name resolves to piagent's address becomes "same-origin" with
  it): a request's `Host` must be a loopback name (`localhost`, `*.localhost`), an IP address, or a
  name in `PIAGENT_ALLOWED_HOSTS` (`*.example.com` for its subdomains; `*` turns the check off).
- **Origin**: a request that says it comes from a page (`Origin`) must come from piagent's own origin
  (the same host and port as its `Host`) or one in `PIAGENT_CORS_ORIGINS`. Where the browser sends
  `Sec-Fetch-Site` (https and loopback origins only), `same-origin` and `none` (typed, bookmarked) pass,
  and a `cross-site`/`same-site` request without an allowed `Origin` is refused too (an `<img>` or a
  no-cors fetch sends none on GET), except a GET or HEAD navigation: following a link to piagent shows
  its page or JSON to the user, never to the linking site. Over plain http to a LAN address browsers
  send no `Sec-Fetch-*`, and `Origin` is the check: browsers send it on every cross-origin request
  but a GET or HEAD, and piagent's GETs change nothing and cannot be read across origins.

Requests without either header (curl, the SDKs, monitors) are never refused by the origin check.
Refusals are 403 in the route's error shape. Decisions are remembered per distinct header value in a
small table, so the steady cost is a few dictionary lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeVar

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from piagent.exceptions import CorsRefused, Forbidden, clip
from piagent.http.responses import error_response_for

# Distinct Host (or Origin and Host) values whose answer is remembered; past it the table starts over.
_REMEMBERED = 256
_SAFE = ("GET", "HEAD")
# Sec-Fetch-Site values a browser sends for piagent's own pages and for what the user typed or bookmarked.
_SAME = (b"same-origin", b"none")
_K = TypeVar("_K")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _split_host(host: str) -> tuple[str, str]:
    """(`name`, `port`) of a Host value, the name lower-case without IPv6 brackets or a final dot."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name.rstrip(".").lower(), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The Host names piagent answers to: loopback names, IP addresses, and the configured names."""

    def __init__(self, names: Iterable[str]) -> None:
        listed = {name.rstrip(".").lower() for name in names}
        self.any = "*" in listed
        self._names = frozenset({"localhost"} | {name for name in listed if not name.startswith("*.")})
        self._suffixes = (".localhost", *(name[1:] for name in listed if name.startswith("*.")))

    def allows(self, host: str) -> bool:
        """Whether a request's `Host` value names piagent."""
        if self.any:
            return True
        name, _ = _split_host(host)
        return name in self._names or name.endswith(self._suffixes) or _is_ip(name)


def is_own_origin(origin: str, host: str) -> bool:
    """Whether `origin` (`scheme://host[:port]`) names the same host and port as the request's `Host`.

    The scheme is not compared: behind a TLS proxy piagent sees http while the page is https.
    """
    scheme, sep, authority = origin.lower().partition("://")
    if not sep or not host:
        return False
    default = _DEFAULT_PORTS.get(scheme, "")
    origin_name, origin_port = _split_host(authority)
    host_name, host_port = _split_host(host)
    return origin_name == host_name and (origin_port or default) == (host_port or default)


class BrowserGuardMiddleware:
    """Answers 403 to a Host piagent does not answer to, and to a page of another origin (see the module)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.hosts = AllowedHosts(allowed_hosts)
        origins = {origin.lower() for origin in cors_origins}
        self._any_origin = "*" in origins
        self._origins = frozenset(origins)
        self._host_answers: dict[bytes, bool] = {}
        self._origin_answers: dict[tuple[bytes, bytes], bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        # One C-level pass over the headers (a repeated header counts once: a browser never repeats these).
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"")
        host_ok = self._host_answers.get(host)
        if host_ok is None:
            host_ok = self._remember(self._host_answers, host, self.hosts.allows(host.decode("latin-1")))
        if not host_ok:
            shown = clip(host.decode("latin-1"))
            await self._refuse(
                scope,
                receive,
                send,
                f"piagent does not answer to the host {shown}; list its name in PIAGENT_ALLOWED_HOSTS",
            )
            return
        origin = headers.get(b"origin")
        site = headers.get(b"sec-fetch-site")
        if origin is None:
            # No Origin: not a browser, or a browser's GET or HEAD; Sec-Fetch-Site, where sent, tells which.
            allowed = (
                site is None
                or site in _SAME
                or (headers.get(b"sec-fetch-mode") == b"navigate" and scope["method"] in _SAFE)
            )
        elif site in _SAME or self._any_origin:
            allowed = True
        else:
            key = (origin, host)
            allowed = self._origin_answers.get(key)
            if allowed is None:
                text = origin.decode("latin-1")
                answer = text.lower() in self._origins or is_own_origin(text, host.decode("latin-1"))
                allowed = self._remember(self._origin_answers, key, answer)
        if allowed:
            await self.app(scope, receive, send)
            return
        shown = clip(origin.decode("latin-1")) if origin is not None else "another site"
        await self._refuse(
            scope,
            receive,
            send,
            f"requests from web pages of {shown} are refused; list the origin in PIAGENT_CORS_ORIGINS",
        )

    @staticmethod
    def _remember(answers: dict[_K, bool], key: _K, answer: bool) -> bool:
        if len(answers) >= _REMEMBERED:
            answers.clear()
        answers[key] = answer
        return answer

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
        else:
            await error_response_for(Request(scope), Forbidden(message))(scope, receive, send)


class CORS(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight answered in the route's error shape.

    Starlette answers it `400 Disallowed CORS headers` in plain text; a page's script reads JSON.
    An origin that is not listed never gets here: the browser guard refuses it first (403).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code >= 400:
                    allowed = {name: value for name, value in response.headers.items() if name.startswith("access-")}
                    methods = allowed.get("access-control-allow-methods", "")
                    refusal = CorsRefused(
                        f"this preflight is refused ({bytes(response.body).decode()}): "
                        f"piagent allows the methods {methods} and the request headers Authorization, Content-Type "
                        "and Accept"
                    )
                    response = error_response_for(Request(scope), refusal, allowed)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
