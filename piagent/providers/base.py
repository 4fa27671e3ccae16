"""The provider seam: what the chat service asks of any model server, whatever its protocol."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from piagent.schemas import UpstreamHealth

if TYPE_CHECKING:  # pool.py builds on common.py, which uses `redact` from here
    from piagent.providers.pool import Upstream

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


class Message(msgspec.Struct, frozen=True):
    """One chat message sent upstream."""

    role: str
    content: str


class Completion(msgspec.Struct, frozen=True):
    """The last item of every reply stream: why it stopped and what it cost."""

    done_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Provider(Protocol):
    """A model server protocol spoken to one or more upstreams. Errors are translated at this edge into
    `piagent.exceptions.UpstreamError`s, which name the upstream but never its URL."""

    name: str
    upstreams: tuple[Upstream, ...]

    def stream_chat(
        self, model: str, messages: Sequence[Message], options: Mapping[str, Any]
    ) -> AsyncGenerator[str | Completion, None]:
        """Yield the reply's text pieces as generated, then one `Completion`; closing it stops generation."""
        ...

    async def check(self, upstream: Upstream) -> UpstreamHealth:
        """Ask one of `upstreams` whether it is up, without generating anything; never raises."""
        ...
