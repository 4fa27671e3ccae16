"""The tool loop on its own: steps, limits, every kind of failure as a result, cancellation of running tools."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import anyio
import pytest

from piagent.loop import LoopDone, LoopLimits, run_loop
from piagent.providers.base import Completion, Message, OutputFormat, Tools
from piagent.schemas import ToolCall, ToolCallEvent, ToolResultEvent
from piagent.tools.base import ToolError, ToolLimits, ToolResult

pytestmark = pytest.mark.anyio

Step = list[str | ToolCall]


class ScriptedProvider:
    """A provider whose replies are scripted step by step, recording what each call was sent."""

    name = "scripted"
    upstreams = ()
    tool_choices = frozenset({"auto", "none"})

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[tuple[list[Message], Tools | None]] = []

    async def stream_chat(
        self,
        model: str,
        messages: Sequence[Message],
        options: Mapping[str, Any],
        tools: Tools | None = None,
        output: OutputFormat | None = None,
    ) -> AsyncGenerator[str | ToolCall | Completion, None]:
        self.calls.append((list(messages), tools))
        step = self.steps.pop(0) if self.steps else ["(no more script)"]
        for item in step:
            yield item
        yield Completion("stop", 10, 5)


class FuncTool:
    """A tool around an async function."""

    def __init__(self, name: str, func: Any, parameters: dict[str, Any] | None = None) -> None:
        self.name = name
        self.description = f"the {name} tool"
        self.parameters = parameters or {"type": "object", "properties": {}}
        self.func = func

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(True, str(await self.func(**arguments)))


async def _echo(text: str = "") -> str:
    return f"echo:{text}"


ECHO = FuncTool("echo", _echo, {"type": "object", "properties": {"text": {"type": "string"}}})


def call(name: str, arguments: str = "{}", call_id: str = "") -> ToolCall:
    return ToolCall(call_id or f"call_{name}", name, arguments)


async def collect(
    provider: ScriptedProvider,
    tools: dict[str, Any],
    limits: LoopLimits | None = None,
    steps: list[Message] | None = None,
) -> list[Any]:
    items = []
    async for item in run_loop(provider, "m", [Message("user", "hi")], {}, tools, limits or LoopLimits(), steps):
        items.append(item)
    return items


async def test_a_reply_without_tool_calls_is_one_step() -> None:
    provider = ScriptedProvider(["Hello", ", world"])
    items = await collect(provider, {"echo": ECHO})
    assert items[:2] == ["Hello", ", world"]
    done = items[-1]
    assert isinstance(done, LoopDone)
    assert (done.text, done.completion.prompt_tokens) == ("Hello, world", 10)
    assert provider.calls[0][1] is not None  # the tools were offered
    assert [spec.name for spec in provider.calls[0][1].specs] == ["echo"]


async def test_a_tool_call_is_run_and_its_result_goes_back_to_the_model() -> None:
    provider = ScriptedProvider([call("echo", '{"text":"pi"}', "call_1")], ["The echo said pi."])
    steps: list[Message] = []
    items = await collect(provider, {"echo": ECHO}, steps=steps)
    assert items[0] == ToolCallEvent("call_1", "echo", '{"text":"pi"}')
    assert items[1] == ToolResultEvent("call_1", "echo", True, "echo:pi")
    assert items[2] == "The echo said pi."
    done = items[-1]
    assert isinstance(done, LoopDone)
    assert (done.completion.prompt_tokens, done.completion.completion_tokens) == (20, 10)  # summed over steps
    second_call = provider.calls[1][0]
    assert second_call[-2] == Message("assistant", "", tool_calls=(call("echo", '{"text":"pi"}', "call_1"),))
    assert second_call[-1] == Message("tool", "echo:pi", tool_call_id="call_1", tool_name="echo")
    assert steps == second_call[1:]


@pytest.mark.parametrize(
    ("tool_call", "expected"),
    [
        pytest.param(call("nope"), "unknown tool 'nope'", id="unknown-tool"),
        pytest.param(call("echo", '{"text": 3}'), "invalid arguments for echo", id="wrong-type"),
        pytest.param(call("echo", "{not json"), "invalid arguments for echo", id="not-json"),
        pytest.param(call("fails"), "fails: the sensor is unplugged", id="tool-error"),
        pytest.param(call("crashes"), "crashes failed: ZeroDivisionError", id="exception"),
        pytest.param(call("slow"), "slow timed out after 0.2 s", id="timeout"),
    ],
)
async def test_every_failure_is_an_error_result_for_the_model(tool_call: ToolCall, expected: str) -> None:
    async def fails() -> str:
        raise ToolError("the sensor is unplugged")

    async def crashes() -> str:
        return str(1 / 0)

    async def slow() -> str:
        await anyio.sleep(5)
        return "late"

    tools = {
        "echo": ECHO,
        "fails": FuncTool("fails", fails),
        "crashes": FuncTool("crashes", crashes),
        "slow": FuncTool("slow", slow),
    }
    provider = ScriptedProvider([tool_call], ["Sorry."])
    limits = LoopLimits(tool=ToolLimits(timeout=0.2))
    items = await collect(provider, tools, limits)
    result = items[1]
    assert isinstance(result, ToolResultEvent)
    assert not result.ok
    assert expected in result.preview
    assert items[-1].text == "Sorry."
    assert expected in provider.calls[1][0][-1].content


async def test_calls_of_one_step_run_at_once_and_past_the_cap_get_an_error() -> None:
    async def nap() -> str:
        await anyio.sleep(0.3)
        return "rested"

    provider = ScriptedProvider([call("nap", call_id=f"call_{n}") for n in range(6)], ["Done."])
    started = time.monotonic()
    items = await collect(provider, {"nap": FuncTool("nap", nap)}, LoopLimits(max_calls=4))
    assert time.monotonic() - started < 1.0  # four naps of 0.3 s, together
    results = [item for item in items if isinstance(item, ToolResultEvent)]
    assert [r.ok for r in results] == [True] * 4 + [False] * 2
    assert "too many tool calls in one step" in results[-1].preview


async def test_after_the_last_step_the_model_is_asked_without_tools() -> None:
    provider = ScriptedProvider(*([call("echo")] for _ in range(3)), ["Enough."])
    items = await collect(provider, {"echo": ECHO}, LoopLimits(max_steps=3))
    assert [tools is not None for _, tools in provider.calls] == [True, True, True, False]
    assert items[-1].text == "Enough."
    assert len([i for i in items if isinstance(i, ToolCallEvent)]) == 3


async def test_tool_calls_asked_for_when_no_tool_was_offered_are_not_run() -> None:
    provider = ScriptedProvider([call("echo")], ["Still ", call("echo")])
    items = await collect(provider, {"echo": ECHO}, LoopLimits(max_steps=1))
    assert len([i for i in items if isinstance(i, ToolResultEvent)]) == 1
    assert items[-1].text == "Still "
    assert len(provider.calls) == 2


async def test_the_reply_deadline_bounds_the_tools_and_then_the_steps() -> None:
    async def slow() -> str:
        await anyio.sleep(5)
        return "late"

    provider = ScriptedProvider([call("slow")], ["Out of time."])
    started = time.monotonic()
    limits = LoopLimits(reply_timeout=0.3, tool=ToolLimits(timeout=10))
    items = await collect(provider, {"slow": FuncTool("slow", slow)}, limits)
    assert time.monotonic() - started < 2
    assert [tools is not None for _, tools in provider.calls] == [True, False]
    assert "timed out" in items[1].preview
    assert items[-1].text == "Out of time."


async def test_closing_the_loop_mid_tool_cancels_the_tool() -> None:
    cancelled = anyio.Event()
    running = anyio.Event()

    async def waits() -> str:
        running.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return "never"

    provider = ScriptedProvider([call("waits")], ["unreached"])
    loop = run_loop(provider, "m", [Message("user", "hi")], {}, {"waits": FuncTool("waits", waits)}, LoopLimits())
    assert isinstance(await loop.__anext__(), ToolCallEvent)
    async with anyio.create_task_group() as group:
        group.start_soon(loop.__anext__)
        await running.wait()
        group.cancel_scope.cancel()
    await loop.aclose()
    with anyio.fail_after(1):
        await cancelled.wait()
    assert len(provider.calls) == 1
