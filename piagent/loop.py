"""The tool loop: ask the model, run the tools it calls, give it the results, ask again, within hard limits.

One reply is a few steps. Each step streams the model's answer with the agent's tools offered; when it
asks for tool calls, they run at once (concurrently, at most `max_calls` a step), each under the tool
limits, and every result (a failure, an unknown tool, bad arguments or a timeout included) goes back to
the model as a `tool` message. The loop ends with the first answer that calls no tool. When the steps or
the reply's wall time run out, the next step offers no tools, so the model has to answer in words.

Cancellation (the client left) propagates: the upstream request closes and running tools are cancelled,
which kills a command tool's process group. Nothing here knows about HTTP or memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec

from piagent.providers.base import Completion, Message, Provider, Tools, ToolSpec
from piagent.schemas import ToolCall, ToolCallEvent, ToolResultEvent
from piagent.tools.base import Tool, ToolLimits, ToolResult, error_result, judged_call

# Told each tool call's tool and outcome (ok, error, timeout, invalid_arguments, unknown_tool, refused).
ToolObserver = Callable[[str, str], None]

# What a step event shows of a tool's result: enough to see what happened, never the whole output.
PREVIEW_CHARS = 200


class LoopLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The hard limits of one reply's tool loop (settings, lowered or raised per agent)."""

    max_steps: int = 6  # model calls that may ask for tools; one more answers without them
    max_calls: int = 4  # tool calls run per step; more are answered with an error result
    reply_timeout: float = 120.0  # seconds for the whole reply's tool work
    tool: ToolLimits = ToolLimits()


class LoopDone(msgspec.Struct, frozen=True):
    """The loop's last item: the final answer's completion (usage summed over the steps) and its text."""

    completion: Completion
    text: str


class AgentTools:
    """What one agent acts with: its tools by name, the MCP servers it takes more from, and its limits."""

    __slots__ = ("limits", "mcp", "tools")

    def __init__(self, tools: Mapping[str, Tool], limits: LoopLimits, mcp: tuple[str, ...] = ()) -> None:
        self.tools = tools
        self.limits = limits
        self.mcp = mcp


LoopItem = str | ToolCallEvent | ToolResultEvent | LoopDone


def offered_tools(tools: Mapping[str, Tool]) -> Tools:
    """The agent's tools as a chat request offers them."""
    return Tools(tuple(ToolSpec(t.name, t.description, t.parameters) for t in tools.values()))


def preview(result: ToolResult) -> str:
    """A bounded, one-line view of a tool result for the step events."""
    text = " ".join(result.text[: PREVIEW_CHARS * 2].split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


async def run_loop(
    provider: Provider,
    model: str,
    messages: Sequence[Message],
    options: Mapping[str, Any],
    tools: Mapping[str, Tool],
    limits: LoopLimits,
    steps: list[Message] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_tool: ToolObserver | None = None,
) -> AsyncGenerator[LoopItem, None]:
    """Yield the reply's text pieces and its tool steps as they happen, then one `LoopDone`.

    Each step's messages (the assistant's message that called tools, then each result) are appended to
    `steps` as they complete, so a caller sees the finished steps even when the reply ends early.
    `on_tool(tool, outcome)` is told how each call went (a name the agent does not have is `-`).
    """
    history = list(messages)
    steps = [] if steps is None else steps
    offered = offered_tools(tools) if tools else None
    deadline = clock() + limits.reply_timeout
    prompt_tokens = completion_tokens = 0
    step = 0
    while True:
        out_of_budget = step >= limits.max_steps or clock() >= deadline
        parts: list[str] = []
        calls: list[ToolCall] = []
        completion: Completion | None = None
        upstream = provider.stream_chat(model, history, options, None if out_of_budget else offered)
        try:
            async for item in upstream:
                if type(item) is str:
                    parts.append(item)
                    yield item
                elif type(item) is ToolCall:
                    calls.append(item)
                else:
                    assert isinstance(item, Completion)
                    completion = item
        finally:
            # Closed at once, not by garbage collection: a client that left must end the upstream request now.
            await upstream.aclose()
        assert completion is not None, "a provider's stream ends with a Completion"
        prompt_tokens += completion.prompt_tokens
        completion_tokens += completion.completion_tokens
        text = "".join(parts)
        if not calls or out_of_budget:  # calls asked for when no tool was offered are not obeyed
            total = Completion(completion.done_reason, prompt_tokens, completion_tokens, completion.timings)
            yield LoopDone(total, text)
            return
        step += 1
        asked = Message("assistant", text, tool_calls=tuple(calls))
        history.append(asked)
        steps.append(asked)
        for call in calls:
            yield ToolCallEvent(call.id, call.name, call.arguments)
        results = await _run_calls(calls, tools, limits, max(0.0, deadline - clock()), on_tool)
        for call, result in zip(calls, results, strict=True):
            yield ToolResultEvent(call.id, call.name, result.ok, preview(result))
            answered = Message("tool", result.text, tool_call_id=call.id, tool_name=call.name)
            history.append(answered)
            steps.append(answered)


async def _run_calls(
    calls: Sequence[ToolCall],
    tools: Mapping[str, Tool],
    limits: LoopLimits,
    remaining: float,
    on_tool: ToolObserver | None = None,
) -> list[ToolResult]:
    """Run a step's calls concurrently, the first `max_calls` of them, none past the reply's deadline.

    A tool may carry its own `timeout` (asking another agent takes a model's time); the reply's deadline
    bounds every one.
    """
    running = calls[: limits.max_calls] if remaining > 0 else ()
    if on_tool is not None:
        for call in calls[len(running) :]:  # past the step's calls or the reply's time: never run
            on_tool(call.name if call.name in tools else "-", "refused")
    if remaining <= 0:
        out_of_time = error_result("no time left for tools in this reply; answer with what you have")
        return [out_of_time] * len(calls)
    results: list[ToolResult] = [
        error_result(f"too many tool calls in one step: at most {limits.max_calls} run; ask again for the rest")
    ] * len(calls)

    async def run(index: int, call: ToolCall) -> None:
        own = getattr(tools.get(call.name), "timeout", None)
        timeout = min(own if isinstance(own, int | float) else limits.tool.timeout, remaining)
        tool_limits = msgspec.structs.replace(limits.tool, timeout=timeout)
        results[index], outcome = await judged_call(tools, call.name, call.arguments, tool_limits)
        if on_tool is not None:
            on_tool(call.name if outcome != "unknown_tool" else "-", outcome)

    if len(running) == 1:  # the common step: no task group to pay for
        await run(0, running[0])
        return results
    async with anyio.create_task_group() as group:
        for index, call in enumerate(running):
            group.start_soon(run, index, call)
    return results
