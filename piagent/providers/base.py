"""The provider seam: what the chat service asks of any model server, whatever its protocol."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from piagent.providers.pool import Upstream
from piagent.schemas import UpstreamHealth


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
