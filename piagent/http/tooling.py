"""Tools and structured output at the front doors, shared by both: bounds on what clients offer, and the
bookkeeping that pairs tool results with the calls they answer across the two protocols. Imports no door."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from piagent.exceptions import ValidationFailed
from piagent.providers.base import ToolCall, ToolSpec, new_call_id


class _Function(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any] | None: ...
    @property
    def strict(self) -> bool | None: ...


class _OfferedTool(Protocol):
    @property
    def function(self) -> _Function: ...


def check_depth(value: Any, max_depth: int, path: str) -> None:
    """422 naming `path` when a JSON value (a schema) nests deeper than `max_depth`; iterative, so a hostile
    schema costs one pass and no recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise ValidationFailed(f"the schema nests deeper than {max_depth} levels", path)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def offered_specs(tools: Sequence[_OfferedTool], max_tools: int, max_depth: int) -> tuple[ToolSpec, ...]:
    """The specs of the tools a client offers (`$.tools`, in either door's shape), with 422s past PIAGENT_MAX_TOOLS
    tools or PIAGENT_MAX_SCHEMA_DEPTH levels of a tool's parameters."""
    if len(tools) > max_tools:
        raise ValidationFailed.over_limit("the number of tools", len(tools), max_tools, "$.tools")
    specs = []
    for index, tool in enumerate(tools):
        function = tool.function
        if function.parameters is not None:
            check_depth(function.parameters, max_depth, f"$.tools[{index}].function.parameters")
        specs.append(ToolSpec(function.name, function.description, function.parameters, function.strict))
    return tuple(specs)


class CallNames:
    """Pairs each tool result in a history with the call it answers, whichever way the client names it.

    OpenAI's clients name the call (`tool_call_id`), Ollama's the function (`tool_name`); an upstream of the
    other protocol needs the other name. The calls of the assistant messages seen so far are remembered in
    order: a result by id finds its call's name, a result by name takes the oldest call of that name not yet
    answered (the order models and clients use), and a result that names neither takes the oldest one.
    """

    __slots__ = ("_by_id", "_open")

    def __init__(self) -> None:
        self._by_id: dict[str, str] = {}
        self._open: list[ToolCall] = []

    def called(self, calls: list[ToolCall]) -> None:
        """An assistant message made these calls."""
        for call in calls:
            self._by_id[call.id] = call.name
        self._open.extend(calls)

    def name_of(self, call_id: str) -> str:
        """The function a result by `call_id` answers ("" when no earlier call had that id)."""
        self._open = [call for call in self._open if call.id != call_id]
        return self._by_id.get(call_id, "")

    def id_of(self, name: str) -> str:
        """The id of the call a result by function `name` answers; a new id when no open call matches."""
        for index, call in enumerate(self._open):
            if not name or call.name == name:
                del self._open[index]
                return call.id
        return new_call_id()
