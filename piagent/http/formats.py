"""The stream formats a reply can take: plain text, SSE and NDJSON of piagent's own events, and the
pieces the front doors build theirs from. Bytes only: nothing here sends or waits."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from piagent.exceptions import PiagentError
from piagent.http.responses import ENCODER
from piagent.schemas import ChatResponse, DoneEvent, ErrorEvent, QueuedEvent, ToolCall, ToolCallEvent, ToolResultEvent


class StreamFormat(NamedTuple):
    """How reply events become bytes; `done`/`error` of None mean the format has no such event.

    `error` is given the request's id too. `start` goes out with the first event (OpenAI's role chunk); the
    front doors build a format per request, since their chunks repeat the response's id and model around
    every token. `tool_call` writes one whole tool call of the client's; `step` one step of the agent's own
    tool loop (a call or a result); a format without them leaves them out (the reply's text only). A format
    with `queued` tells a request waiting for a generation slot its place; without it, the wait is silent.
    """

    media_type: str
    token: Callable[[str], bytes]
    done: Callable[[ChatResponse], bytes] | None
    error: Callable[[PiagentError, str | None], bytes] | None
    start: bytes = b""
    tool_call: Callable[[ToolCall], bytes] | None = None
    step: Callable[[ToolCallEvent | ToolResultEvent], bytes] | None = None
    queued: Callable[[QueuedEvent], bytes] | None = None


def token_template(
    template: bytes, escape: Callable[[bytes], bytes] | None = None, field: bytes = b'"content":""'
) -> Callable[[str], bytes]:
    """A token encoder from one encoded event whose text `field` is empty: every token's event is the same
    bytes around the token's text, so the text's msgspec-escaped JSON goes in between (then `escape`d):
    no event object per token."""
    head, marker, tail = template.partition(field)
    if not marker:
        raise ValueError(f"the template has no empty {field!r}")
    head += field[:-2]  # up to and with the colon
    if escape is None:
        return lambda text: head + ENCODER.encode(text) + tail
    return lambda text: head + escape(ENCODER.encode(text)) + tail


def _done_event(reply: ChatResponse) -> DoneEvent:
    return DoneEvent(reply.conversation_id, reply.done_reason, reply.usage)


def _step_name(event: ToolCallEvent | ToolResultEvent) -> bytes:
    return b"tool_call" if type(event) is ToolCallEvent else b"tool_result"


def _error_event(exc: PiagentError, request_id: str | None) -> ErrorEvent:
    return ErrorEvent(exc.code, exc.message, request_id)


# The token encoders build the event's JSON around the msgspec-escaped text directly: no event
# object per token on the hot path. Each is equal to encoding TokenEvent(text) (a test checks).
PLAIN = StreamFormat("text/plain; charset=utf-8", str.encode, None, None)
SSE = StreamFormat(
    "text/event-stream; charset=utf-8",
    lambda text: b'event: token\ndata: {"event":"token","text":' + ENCODER.encode(text) + b"}\n\n",
    lambda reply: b"event: done\ndata: " + ENCODER.encode(_done_event(reply)) + b"\n\n",
    lambda exc, request_id: b"event: error\ndata: " + ENCODER.encode(_error_event(exc, request_id)) + b"\n\n",
    step=lambda event: b"event: " + _step_name(event) + b"\ndata: " + ENCODER.encode(event) + b"\n\n",
    queued=lambda event: b"event: queued\ndata: " + ENCODER.encode(event) + b"\n\n",
)
NDJSON = StreamFormat(
    "application/x-ndjson",
    lambda text: b'{"event":"token","text":' + ENCODER.encode(text) + b"}\n",
    lambda reply: ENCODER.encode(_done_event(reply)) + b"\n",
    lambda exc, request_id: ENCODER.encode(_error_event(exc, request_id)) + b"\n",
    step=lambda event: ENCODER.encode(event) + b"\n",
    queued=lambda event: ENCODER.encode(event) + b"\n",
)


def choose_format(accept: str) -> StreamFormat:
    """SSE or NDJSON when the Accept header asks for it, plain text (curl-friendly) otherwise."""
    if "text/event-stream" in accept:
        return SSE
    if "application/x-ndjson" in accept:
        return NDJSON
    return PLAIN
