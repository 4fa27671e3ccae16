"""Tool calls and structured output in the OpenAI-compatible protocol's shape (requests sent upstream)."""

from __future__ import annotations

from typing import Any

import msgspec

from piagent.providers.base import Message, OutputFormat, Tools
from piagent.providers.tooling import function_tools


class FunctionPiece(msgspec.Struct):
    """The `function` of one streamed `delta.tool_calls` piece: the name first, then argument fragments."""

    name: str | None = None
    arguments: str | None = None


NO_FUNCTION = FunctionPiece()


class _WireFunction(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class _WireToolCall(msgspec.Struct, frozen=True):
    id: str
    function: _WireFunction
    type: str = "function"


class ToolMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A message that carries tool calls (content may then be null) or a tool's result, in OpenAI's shape."""

    role: str
    content: str | None
    tool_calls: list[_WireToolCall] | None = None
    tool_call_id: str = ""


class _NamedFunction(msgspec.Struct, frozen=True):
    name: str


class _NamedChoice(msgspec.Struct, frozen=True):
    function: _NamedFunction
    type: str = "function"


class _JSONSchema(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    schema: dict[str, Any]
    strict: bool | None = None


class _ResponseFormat(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    json_schema: _JSONSchema | None = None


def wire_message(message: Message) -> Message | ToolMessage:
    """The message in OpenAI's shape: a plain one as it is; tool calls and results with their ids."""
    if not message.tool_calls and message.role != "tool":
        return message
    calls = [_WireToolCall(call.id, _WireFunction(call.name, call.arguments)) for call in message.tool_calls]
    content = message.content if message.content or not calls else None
    return ToolMessage(message.role, content, calls or None, message.tool_call_id)


def add_tools(body: dict[str, Any], tools: Tools) -> None:
    """Put the offered tools, `tool_choice` and `parallel_tool_calls` into a request body."""
    if not tools.specs:
        return
    body["tools"] = function_tools(tools)
    if tools.choice == "function":
        body["tool_choice"] = _NamedChoice(_NamedFunction(tools.function))
    elif tools.choice != "auto":  # auto is every server's default, and some older ones reject the field
        body["tool_choice"] = tools.choice
    if tools.parallel is not None:
        body["parallel_tool_calls"] = tools.parallel


def response_format(output: OutputFormat) -> _ResponseFormat:
    """`response_format`: `json_object` for any JSON object, `json_schema` for one matching a schema."""
    if output.schema is None:
        return _ResponseFormat("json_object")
    return _ResponseFormat("json_schema", _JSONSchema(output.name or "output", output.schema, output.strict))
