"""The tool contract: what a tool is, what it returns, and the one guarded way to run it."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from piagent.tools.schema import ArgumentError, validate

# Exception texts can be long (a traceback's worth of repr); the model needs the gist.
_MAX_ERROR_CHARS = 300


class ToolResult(msgspec.Struct, frozen=True):
    """What a tool gives back to the model: success, the text, and whether the text was cut."""

    ok: bool
    text: str
    truncated: bool = False


class ToolLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds on one tool call: wall time, bytes of output given back, bytes of raw arguments read."""

    timeout: float = 10.0
    output_max_bytes: int = 16384
    arguments_max_bytes: int = 16384


class Tool(Protocol):
    """A function the model may call: a name, a description, a JSON schema for its arguments, and `run`."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        """Do the work with arguments already checked against `parameters`."""
        ...


class ToolError(Exception):
    """An expected failure inside a tool; its message is what the model sees."""


def function_spec(tool: Tool) -> dict[str, Any]:
    """The tool as an entry of a chat request's `tools` list (the OpenAI and Ollama shape alike)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def truncate_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` cut to at most `max_bytes` of UTF-8 on a character boundary, with a marker saying how much went."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text, False
    kept = decode_prefix(data[:max_bytes])
    dropped = len(data) - len(kept.encode("utf-8", "surrogatepass"))
    return f"{kept}\n[truncated: {dropped} bytes more]", True


def decode_prefix(data: bytes, encoding: str = "utf-8") -> str:
    """`data` decoded with bad bytes replaced, leaving out a character cut in half at the end."""
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    return decoder.decode(data, final=False)


def decode_arguments(raw: str | bytes | Mapping[str, Any] | None, max_bytes: int) -> dict[str, Any]:
    """The arguments of a tool call as an object: OpenAI sends a JSON string, Ollama an object."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        try:
            size = len(msgspec.json.encode(raw))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ArgumentError("$", "arguments are not JSON") from exc
        if size > max_bytes:
            raise ArgumentError("$", f"arguments are {size} bytes, more than {max_bytes}")
        return dict(raw)
    if len(raw) > max_bytes:
        raise ArgumentError("$", f"arguments are {len(raw)} bytes, more than {max_bytes}")
    if not raw.strip():
        return {}  # some models send "" for a call without arguments
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ArgumentError("$", "arguments are not valid JSON") from exc
    if not isinstance(decoded, dict):
        raise ArgumentError("$", "arguments must be a JSON object")
    return decoded


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def error_result(message: str) -> ToolResult:
    """A failed call, as the model sees it."""
    return ToolResult(ok=False, text=_short(message))


async def run_tool(tool: Tool, raw_arguments: str | bytes | Mapping[str, Any] | None, limits: ToolLimits) -> ToolResult:
    """Decode and check the arguments, run the tool under the time limit, cap its output.

    Every failure becomes an error result for the model; only cancellation propagates, so a client that
    goes away stops the tool (and whatever child process it started) at once.
    """
    return (await judged_run(tool, raw_arguments, limits))[0]


async def judged_run(
    tool: Tool, raw_arguments: str | bytes | Mapping[str, Any] | None, limits: ToolLimits
) -> tuple[ToolResult, str]:
    """`run_tool`, with how the call went: `ok`, `error` (the tool failed or said so), `timeout` or
    `invalid_arguments` (for the metrics; the model sees the result alone)."""
    try:
        arguments = decode_arguments(raw_arguments, limits.arguments_max_bytes)
        validate(tool.parameters, arguments)
    except ArgumentError as exc:
        return error_result(f"invalid arguments for {tool.name}: {exc}"), "invalid_arguments"
    try:
        async with asyncio.timeout(limits.timeout) as deadline:
            result = await tool.run(arguments)
    except TimeoutError:
        if deadline.expired():
            return error_result(f"{tool.name} timed out after {limits.timeout:g} s"), "timeout"
        return error_result(f"{tool.name} failed: timed out"), "error"
    except ToolError as exc:
        return error_result(f"{tool.name}: {exc}"), "error"
    except ArgumentError as exc:
        return error_result(f"invalid arguments for {tool.name}: {exc}"), "invalid_arguments"
    except Exception as exc:
        return error_result(f"{tool.name} failed: {type(exc).__name__}: {exc}"), "error"
    text, cut = truncate_utf8(result.text, limits.output_max_bytes)
    return ToolResult(ok=result.ok, text=text, truncated=cut or result.truncated), "ok" if result.ok else "error"


async def call_tool(
    tools: Mapping[str, Tool], name: str, raw_arguments: str | bytes | Mapping[str, Any] | None, limits: ToolLimits
) -> ToolResult:
    """`run_tool` for the tool the model named; a name the agent does not have is an error result."""
    return (await judged_call(tools, name, raw_arguments, limits))[0]


async def judged_call(
    tools: Mapping[str, Tool], name: str, raw_arguments: str | bytes | Mapping[str, Any] | None, limits: ToolLimits
) -> tuple[ToolResult, str]:
    """`call_tool`, with how the call went (`judged_run`'s outcomes, and `unknown_tool`)."""
    tool = tools.get(name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        return error_result(f"unknown tool {name[:64]!r}; this agent's tools: {known}"), "unknown_tool"
    return await judged_run(tool, raw_arguments, limits)
