"""The built-in chat page: one static HTML file, read once, served with a strict CSP and a strong ETag."""

from __future__ import annotations

import base64
import hashlib
import pkgutil
import re

from starlette.requests import Request
from starlette.responses import Response

from piagent.http.openapi import Body, Endpoint

# The page's only script and style are inline; the CSP allows exactly those bytes, by hash.
_INLINE = re.compile(rb"<(script|style)(?:\s[^>]*)?>(.*?)</\1>", re.DOTALL)


def _csp_hash(content: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(content).digest()).decode() + "'"


def content_security_policy(html: bytes) -> str:
    """A policy that runs the page's own inline script and style and nothing else, and talks only home."""
    sources: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(html):
        sources[kind].append(_csp_hash(content))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src " + (" ".join(sources[b"script"]) or "'none'"),
            "style-src " + (" ".join(sources[b"style"]) or "'none'"),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match uses: `*`, or any listed tag equal up to the W/ prefix."""
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", etag) for tag in tags)


class ChatPage:
    """The page's bytes and headers, computed once; `endpoint` serves them (304 when the browser has them)."""

    __slots__ = ("body", "etag", "headers")

    def __init__(self, html: bytes) -> None:
        self.body = html
        self.etag = '"' + hashlib.sha256(html).hexdigest()[:32] + '"'
        # no-cache: the browser keeps the page but asks each time; an unchanged page costs a bodiless 304,
        # and a new piagent version shows at the next load.
        self.headers = {
            "ETag": self.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": content_security_policy(html),
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }

    async def endpoint(self, request: Request) -> Response:
        """`GET /`: the page, or 304 Not Modified when `If-None-Match` names this version."""
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and _matches(if_none_match, self.etag):
            return Response(status_code=304, headers=self.headers)
        return Response(self.body, media_type="text/html; charset=utf-8", headers=self.headers)


def load_chat_page() -> ChatPage:
    """Read the page shipped inside the package (`piagent/static/index.html`)."""
    # Through the package's loader, as importlib.resources would, without its readers (they import zipfile:
    # 0.3 MiB of idle RSS for one file read at start-up).
    html = pkgutil.get_data("piagent", "static/index.html")
    if html is None:  # a loader that cannot read data files (none that installs piagent)
        raise FileNotFoundError("piagent/static/index.html")
    return ChatPage(html)


# What /openapi.json says about this door's routes.
API: tuple[Endpoint, ...] = (
    Endpoint("GET", "/", "The chat page (when PIAGENT_CHAT_PAGE is on)", ok=(Body("text/html", str),)),
)
