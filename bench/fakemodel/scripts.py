"""What the fake answers: a :class:`Script` per request, the tool calls it may carry, and what it records."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

import msgspec

__all__ = ["TOKENS", "Recorded", "Script", "ToolCall", "json_script", "reply_text", "vocabulary"]

# The benchmark's fixed vocabulary, cycled: plain words, punctuation, a newline, JSON-escaped quotes and a multi-byte
# character, so a relay that mangles escaping or UTF-8 shows up as a mismatch.
TOKENS: tuple[str, ...] = (
    " The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    ",",
    ' "quoted"',
    " café",
    " 42",
    ".",
    "\n",
    " And",
)


def vocabulary(count: int) -> list[str]:
    """The first ``count`` tokens of the cycled vocabulary."""
    n = len(TOKENS)
    return [TOKENS[i % n] for i in range(count)]


def reply_text(count: int) -> str:
    """The whole reply the fake generates from the vocabulary for a request of ``count`` tokens."""
    return "".join(vocabulary(count))


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One tool call the model asks for; ``arguments`` is an object (Ollama sends it so, OpenAI as a string)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # OpenAI's call id; default call_<index>
    pieces: int = 3  # OpenAI streams the arguments string in this many fragments after the name


@dataclasses.dataclass
class Script:
    """How the fake answers one chat (or generate) request, in either protocol.

    With ``"stream": false`` the same script applies without the streaming: the delays add up before the one
    JSON answer, ``error_after`` turns into a 500, stalls, resets and closes happen before any byte, and
    ``raw_body`` is sent joined with a Content-Length. Empty ``raw_body`` items are skipped when streaming, since
    a zero-length chunk would end the body. Items are the token lines, then the tool-call lines (Ollama: one line
    with every call; OpenAI: per call the name piece, then the argument fragments); the fault indexes count them.
    """

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    tool_calls: list[ToolCall] = field(default_factory=list)
    delay: float = 0.0  # seconds between items (also before the final done line)
    final_delay: float | None = None  # before the final line instead of ``delay``
    first_delay: float = 0.0  # after the headers, before the first item
    header_delay: float = 0.0  # before the status line is written at all
    status: int = 200  # != 200: answer that status with the protocol's error body and stop
    error: str = "boom"  # error text, for status errors and in-band error lines
    error_after: int | None = None  # after N items write an in-band error and end the body properly
    stall_after: int | None = None  # after N items (0 = right after headers) stop writing until the client closes
    stall_before_headers: bool = False  # write nothing at all; wait until the client closes
    reset_after: int | None = None  # after N items abort with a TCP RST; -1 = before the status line
    close_after: int | None = None  # after N items close the connection cleanly (FIN); -1 = before the status line
    raw_body: list[bytes] | None = None  # send exactly these chunks (each its own HTTP chunk) as the body
    after_done: bytes = b""  # bytes written after the final line (e.g. junk an upstream should not be read for)
    hang_after_done: bool = False  # never end the body after the final line; wait until the client closes
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (e.g. a huge one)
    gzip: bool = False  # Content-Encoding: gzip, each chunk flushed so the stream stays incremental
    done_reason: str = "stop"  # Ollama's done_reason, OpenAI's finish_reason ("tool_calls" when calls are sent)
    prompt_eval_count: int = 7
    eval_count: int | None = None  # default: len(tokens)
    # OpenAI only:
    usage: bool = True  # send the usage chunk when asked for (llama-cpp-python never does)
    crlf: bool = False  # end SSE lines with \r\n, as some servers do
    comments: bool = False  # a ": keep-alive" comment and "event:"/"id:" fields before each event
    send_done: bool = True  # end with data: [DONE]

    def completion_tokens(self) -> int:
        """The generated-token count the final line reports."""
        return len(self.tokens) if self.eval_count is None else self.eval_count

    def is_plain(self) -> bool:
        """True when nothing delays or breaks the reply, so it can be written at once."""
        return not (
            self.delay > 0
            or self.first_delay > 0
            or self.error_after is not None
            or self.stall_after is not None
            or self.reset_after is not None
            or self.close_after is not None
            or self.hang_after_done
        )


def json_script(value: object, pieces: int = 4, **knobs: Any) -> Script:
    """A script whose reply is ``value`` as JSON text (structured output), streamed in about ``pieces`` tokens."""
    text = msgspec.json.encode(value).decode()
    size = max(1, -(-len(text) // max(1, pieces)))
    return Script(tokens=[text[i : i + size] for i in range(0, len(text), size)], **knobs)


@dataclasses.dataclass(slots=True)
class Recorded:
    """One HTTP request as received by the fake."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", " (not recording: framing only)
    json: Any | None  # the parsed JSON body, or None when empty or not JSON
    received_at: float  # time.monotonic() when the request was completely read
    connection: int = 0  # serial number (1, 2, ...) of the TCP connection it arrived on
    body: bytes = b""  # the raw (de-chunked) request body
