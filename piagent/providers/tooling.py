"""Tool calls on the upstream side, shared by both providers: the wire shape of tools, and bounds on the calls."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from piagent.exceptions import UpstreamError
from piagent.providers.base import ToolCall, Tools, ToolSpec, new_call_id

# A reply with no tool calls costs nothing here: these run only when a call arrives.
_OBJECT = msgspec.json.Decoder(dict[str, Any])


class FunctionTool(msgspec.Struct, frozen=True):
    """One entry of a request's `tools`: the same shape in Ollama's API and OpenAI's."""

    function: ToolSpec
    type: Literal["function"] = "function"


def function_tools(tools: Tools) -> list[FunctionTool]:
    """The offered tools as an upstream request's `tools` list."""
    return [FunctionTool(spec) for spec in tools.specs]


class ToolCallLimits(msgspec.Struct, frozen=True):
    """How many tool calls one reply may carry, and how long the arguments of one may be (bytes of JSON)."""

    max_calls: int = 16
    max_argument_bytes: int = 65536


def check_count(count: int, limits: ToolCallLimits, upstream: str) -> None:
    """Raise an upstream error when a reply asks for more tool calls than allowed."""
    if count > limits.max_calls:
        raise UpstreamError(f"{upstream} asked for more than {limits.max_calls} tool calls in one reply")


def checked_call(call_id: str, name: str, arguments: bytes, limits: ToolCallLimits, upstream: str) -> ToolCall:
    """A whole tool call from an upstream: named, its arguments a JSON object within the size limit.

    Both doors need the arguments as an object (Ollama's clients read one), so text that is no JSON
    object is the upstream's error here rather than a broken reply later. No arguments mean `{}`.
    """
    if not name:
        raise UpstreamError(f"{upstream} sent a tool call without a function name")
    if len(arguments) > limits.max_argument_bytes:
        raise UpstreamError(f"{upstream} sent tool call arguments over {limits.max_argument_bytes} bytes")
    if not arguments.strip() or arguments == b"null":
        arguments = b"{}"
    try:
        _OBJECT.decode(arguments)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise UpstreamError(f"{upstream} sent tool call arguments that are not a JSON object: {exc}") from exc
    return ToolCall(call_id or new_call_id(), name, arguments.decode())


class ToolCallPieces:
    """OpenAI's streamed `delta.tool_calls`, put together: each call's id and name arrive in its first
    piece, its arguments as string fragments, all keyed by `index`; bounded in count and bytes as they come."""

    __slots__ = ("_calls", "_limits", "_upstream")

    def __init__(self, limits: ToolCallLimits, upstream: str) -> None:
        self._limits = limits
        self._upstream = upstream
        # index -> [id, name, argument fragments, bytes so far]
        self._calls: dict[int, list[Any]] = {}

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        """Take one piece."""
        call = self._calls.get(index)
        if call is None:
            check_count(len(self._calls) + 1, self._limits, self._upstream)
            call = self._calls[index] = ["", "", [], 0]
        if call_id:
            call[0] = call_id
        if name:
            call[1] += name  # a name is sent whole in practice; concatenating also covers one sent in parts
        if arguments:
            call[3] += len(arguments.encode())
            if call[3] > self._limits.max_argument_bytes:
                raise UpstreamError(
                    f"{self._upstream} sent tool call arguments over {self._limits.max_argument_bytes} bytes"
                )
            call[2].append(arguments)

    def __bool__(self) -> bool:
        return bool(self._calls)

    def finish(self) -> list[ToolCall]:
        """Every call put together, in index order; empties the collection."""
        calls = [
            checked_call(call_id, name, "".join(parts).encode(), self._limits, self._upstream)
            for _, (call_id, name, parts, _size) in sorted(self._calls.items())
        ]
        self._calls.clear()
        return calls
