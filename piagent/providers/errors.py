"""Upstream failures as piagent errors: transport faults, error statuses and their bodies, text fit for a client.

The lowest module of the providers package: it imports none of its siblings, so every one of them can use it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec

from piagent.exceptions import UpstreamError, UpstreamTimeout, UpstreamUnavailable

# What an upstream's own error text may carry that a client must never see: URLs (the upstream's or its
# runner's), network addresses and file paths (model blobs under the server's home, for instance).
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|\[[0-9A-Fa-f:]+\](?::\d+)?")
_PATH = re.compile(r"(?:(?<=^)|(?<=[\s'\"(=,]))~?/[^\s'\"():,]+/[^\s'\"():,]*|\b[A-Za-z]:\\[^\s'\"]+")
MAX_UPSTREAM_TEXT = 300


def redact(text: str) -> str:
    """An upstream's error text fit for a client: URLs, addresses and paths replaced, length capped."""
    text = _URL.sub("<url>", text)
    text = _ADDRESS.sub("<address>", text)
    text = _PATH.sub("<path>", text)
    return text if len(text) <= MAX_UPSTREAM_TEXT else text[:MAX_UPSTREAM_TEXT] + "..."


class _OpenAIError(msgspec.Struct):
    message: str = ""


class _ErrorBody(msgspec.Struct):
    """The error bodies model servers send: Ollama `{"error": "text"}`, OpenAI `{"error": {"message"}}`,
    FastAPI-based servers `{"detail": ...}`."""

    error: str | _OpenAIError | None = None
    detail: Any = None


_ERROR_BODY = msgspec.json.Decoder(_ErrorBody)


# What each transport says of a response head over its bounds: piagent's own (PIAGENT_MAX_UPSTREAM_HEAD_BYTES and
# PIAGENT_MAX_UPSTREAM_HEADERS) and h11 under httpx's default transport (httpcore bounds a head at 100 KiB).
_HEAD_TOO_LARGE = ("the response head is over", "the response head has more than", "Receive buffer too long")


def translate_transport_error(exc: httpx.TransportError, upstream: str) -> UpstreamError:
    """The piagent error for an httpx failure talking to `upstream` (never naming its URL)."""
    if isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(_HEAD_TOO_LARGE):
        return UpstreamError(f"{upstream} sent a response head too large to accept ({exc})")
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamUnavailable(f"{upstream} did not accept a connection in time")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnavailable(f"{upstream} is unreachable (connection refused or no route); is it running?")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{upstream} did not answer in time")
    return UpstreamError(f"{upstream} broke the connection ({type(exc).__name__})")


def error_text(body: bytes) -> str:
    """The human part of an upstream's error body, whatever its dialect; the raw start when it has none."""
    try:
        parsed = _ERROR_BODY.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        parsed = _ErrorBody()
    error = parsed.error
    text = error.message if isinstance(error, _OpenAIError) else error or ""
    if not text and parsed.detail is not None:
        detail = parsed.detail
        text = detail if isinstance(detail, str) else msgspec.json.encode(detail)[:200].decode("utf-8", "replace")
    return redact(text or body[:200].decode("utf-8", "replace").strip()) or "no error text"


def status_error(upstream: str, status: int, body: bytes) -> UpstreamError:
    """The piagent error for an upstream's error status: busy or rate-limited is unavailable, the rest 502."""
    message = f"{upstream}: {error_text(body)} (HTTP {status})"
    if status in (429, 503):
        return UpstreamUnavailable(message)
    return UpstreamError(message)


class ReplyTimeouts:
    """Two read timeouts for a streamed reply, at no cost per token, and the errors named after them.

    Until the response head arrives, `first` (a model server sends its head with the first token, after
    loading the model and reading the prompt); after it, the client's own read timeout, the longest
    silence allowed between two pieces.
    """

    __slots__ = ("first", "head", "idle")

    def __init__(self, client: httpx.AsyncClient, first_token_timeout: float | None = None) -> None:
        timeout = client.timeout
        self.idle = timeout.read
        self.first = timeout.read if first_token_timeout is None else first_token_timeout
        self.head = httpx.Timeout(connect=timeout.connect, read=self.first, write=timeout.write, pool=timeout.pool)

    def head_error(self, exc: httpx.TransportError, upstream: str) -> UpstreamError:
        """A failure before the response head, named for what the client waited for."""
        if isinstance(exc, httpx.ReadTimeout):
            return UpstreamTimeout(f"{upstream} did not start its reply within {self.first:g} s")
        return translate_transport_error(exc, upstream)

    def body_error(self, exc: httpx.TransportError, upstream: str) -> UpstreamError:
        """A failure after the response head, while the reply streams."""
        if isinstance(exc, httpx.ReadTimeout):
            return UpstreamTimeout(f"{upstream} went silent for {self.idle:g} s after starting its reply")
        return translate_transport_error(exc, upstream)
