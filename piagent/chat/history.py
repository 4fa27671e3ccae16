"""Conversation memory and tool steps: turns as stored, messages as sent upstream, steps as shown."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from piagent.providers.base import Message
from piagent.schemas import ToolCall, ToolResultEvent, ToolStep
from piagent.stores.base import ASSISTANT, TOOL, USER, ToolCallRecord, Turn


def turn_of(step: Message, now: float) -> Turn:
    """A tool step (the assistant's calls, or a result) as memory keeps it."""
    calls = tuple(ToolCallRecord(c.id, c.name, c.arguments) for c in step.tool_calls)
    role = TOOL if step.role == TOOL else ASSISTANT
    return Turn(role, step.content, now, False, calls, step.tool_call_id, step.tool_name)


def messages_of(history: Sequence[Turn]) -> list[Message]:
    """Remembered turns as messages; turns before the first user message (the start of a tool step that
    the `max_turns` trim cut in half) are left out, since an upstream refuses a result without its call."""
    start = next((i for i, turn in enumerate(history) if turn.role == USER), len(history))
    return [
        Message(
            turn.role,
            turn.text,
            tuple(ToolCall(c.id, c.name, c.arguments) for c in turn.tool_calls),
            turn.tool_call_id,
            turn.name,
        )
        for turn in history[start:]
    ]


def record_result(shown: list[ToolStep], result: ToolResultEvent) -> None:
    """Complete the shown step of the call this result answers."""
    for index in range(len(shown) - 1, -1, -1):
        if shown[index].id == result.id:
            shown[index] = msgspec.structs.replace(shown[index], ok=result.ok, preview=result.preview)
            return
