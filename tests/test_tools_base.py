"""The guarded runner: arguments decoded and checked before a tool runs, time and output capped, errors as results."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from piagent.tools import ArgumentError, ToolError, ToolLimits, ToolResult, call_tool, function_spec, run_tool, validate
from piagent.tools.base import truncate_utf8

pytestmark = pytest.mark.anyio


class Recorder:
    """A tool that records its calls and does what the test tells it."""

    name = "probe"
    description = "A test tool."
    parameters: dict[str, Any] = {  # noqa: RUF012 - per-test instances never share it mutated
        "type": "object",
        "properties": {
            "pin": {"type": "integer", "minimum": 0, "maximum": 27},
            "mode": {"type": "string", "enum": ["in", "out"]},
        },
        "required": ["pin"],
        "additionalProperties": False,
    }

    def __init__(self, behaviour: str = "ok", text: str = "done") -> None:
        self.calls: list[dict[str, Any]] = []
        self.behaviour = behaviour
        self.text = text
        self.cancelled = False
        self.started = asyncio.Event()

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        self.calls.append(arguments)
        self.started.set()
        if self.behaviour == "sleep":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.behaviour == "raise":
            raise RuntimeError("the sensor fell off\n" + "x" * 5000)
        if self.behaviour == "tool-error":
            raise ToolError("pin 4 is busy")
        return ToolResult(ok=True, text=self.text)


LIMITS = ToolLimits(timeout=5, output_max_bytes=64, arguments_max_bytes=200)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"pin": 4, "mode": "in"}', id="json-string"),
        pytest.param(b'{"pin": 4, "mode": "in"}', id="json-bytes"),
        pytest.param({"pin": 4, "mode": "in"}, id="object"),
    ],
)
async def test_arguments_arrive_as_an_object_from_either_protocol(raw: Any) -> None:
    tool = Recorder()
    result = await run_tool(tool, raw, LIMITS)
    assert result == ToolResult(ok=True, text="done")
    assert tool.calls == [{"pin": 4, "mode": "in"}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param('{"pin": 40}', "$.pin: must be at most 27", id="above-maximum"),
        pytest.param('{"pin": -1}', "$.pin: must be at least 0", id="below-minimum"),
        pytest.param('{"pin": "4"}', "$.pin: expected an integer", id="string-for-integer"),
        pytest.param('{"pin": 4.0}', "$.pin: expected an integer", id="float-for-integer"),
        pytest.param('{"pin": true}', "$.pin: expected an integer", id="bool-for-integer"),
        pytest.param('{"mode": "in"}', "$.pin: is required", id="missing-required"),
        pytest.param('{"pin": 4, "mode": "both"}', "$.mode: must be one of 'in', 'out'", id="not-in-enum"),
        pytest.param('{"pin": 4, "cmd": "rm"}', "$.cmd: is not a parameter of this tool", id="extra-property"),
        pytest.param('{"pin": 4', "arguments are not valid JSON", id="broken-json"),
        pytest.param("[4]", "arguments must be a JSON object", id="array"),
        pytest.param('"4"', "arguments must be a JSON object", id="string"),
        pytest.param('{"pin": 4, "mode": "' + "x" * 300 + '"}', "more than 200", id="too-large"),
    ],
)
async def test_invalid_arguments_are_an_error_result_and_the_tool_never_runs(raw: str, message: str) -> None:
    tool = Recorder()
    result = await run_tool(tool, raw, LIMITS)
    assert not result.ok
    assert result.text.startswith("invalid arguments for probe: ")
    assert message in result.text
    assert tool.calls == []


async def test_an_oversized_argument_object_is_refused_too() -> None:
    tool = Recorder()
    result = await run_tool(tool, {"pin": 1, "mode": "x" * 500}, LIMITS)
    assert not result.ok
    assert "more than 200" in result.text
    assert tool.calls == []


@pytest.mark.parametrize("raw", [pytest.param("", id="empty-string"), pytest.param(None, id="none")])
async def test_no_arguments_mean_an_empty_object(raw: Any) -> None:
    tool = Recorder()
    result = await run_tool(tool, raw, LIMITS)
    assert "$.pin: is required" in result.text
    assert tool.calls == []


async def test_a_slow_tool_is_stopped_at_the_timeout_and_cancelled() -> None:
    tool = Recorder("sleep")
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await run_tool(tool, '{"pin": 1}', ToolLimits(timeout=0.2))
    assert loop.time() - started < 2
    assert result == ToolResult(ok=False, text="probe timed out after 0.2 s")
    assert tool.cancelled


async def test_an_exception_is_a_short_error_result() -> None:
    result = await run_tool(Recorder("raise"), '{"pin": 1}', LIMITS)
    assert not result.ok
    assert result.text.startswith("probe failed: RuntimeError: the sensor fell off xxx")
    assert len(result.text) <= 300


async def test_a_tool_error_is_passed_on_as_said() -> None:
    result = await run_tool(Recorder("tool-error"), '{"pin": 1}', LIMITS)
    assert result == ToolResult(ok=False, text="probe: pin 4 is busy")


async def test_cancellation_reaches_the_tool_and_propagates() -> None:
    tool = Recorder("sleep")
    task = asyncio.ensure_future(run_tool(tool, '{"pin": 1}', LIMITS))
    await tool.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tool.cancelled


async def test_long_output_is_cut_on_a_character_boundary_with_a_marker() -> None:
    text = "é" * 100  # two bytes each: a 64-byte cut falls on a boundary, 63 would not
    result = await run_tool(Recorder(text=text), '{"pin": 1}', ToolLimits(output_max_bytes=63))
    assert result.truncated
    assert result.text == "é" * 31 + "\n[truncated: 138 bytes more]"


def test_truncation_leaves_short_text_alone() -> None:
    assert truncate_utf8("abc", 3) == ("abc", False)
    assert truncate_utf8("a€", 3) == ("a\n[truncated: 3 bytes more]", True)


async def test_an_unknown_tool_is_an_error_result_naming_the_known_ones() -> None:
    result = await call_tool({"probe": Recorder()}, "rm_rf", "{}", LIMITS)
    assert result == ToolResult(ok=False, text="unknown tool 'rm_rf'; this agent's tools: probe")


def test_a_tool_is_offered_to_the_model_in_the_function_shape() -> None:
    tool = Recorder()
    assert function_spec(tool) == {
        "type": "function",
        "function": {"name": "probe", "description": "A test tool.", "parameters": tool.parameters},
    }


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        pytest.param({"type": "string", "pattern": "[a-z]+"}, "abc\n", "must match", id="pattern-trailing-newline"),
        pytest.param({"type": "string", "pattern": "[a-z]+"}, "abc;id", "must match", id="pattern-is-whole-string"),
        pytest.param({"type": "string", "pattern": "^[a-z]+$"}, "abc\n", "must match", id="dollar-no-newline"),
        pytest.param({"type": "string", "maxLength": 3}, "abcd", "at most 3 characters", id="max-length"),
        pytest.param({"type": "string", "minLength": 2}, "a", "at least 2 characters", id="min-length"),
        pytest.param({"type": "number", "maximum": 1.5}, 2, "at most 1.5", id="number-maximum"),
        pytest.param({"type": "number"}, float("nan"), "expected a number", id="nan"),
        pytest.param({"type": "number", "exclusiveMinimum": 0}, 0, "more than 0", id="exclusive-minimum"),
        pytest.param({"type": "boolean"}, 1, "expected a boolean", id="int-for-bool"),
        pytest.param({"type": "array", "maxItems": 2}, [1, 2, 3], "at most 2 items", id="max-items"),
        pytest.param({"type": "array", "items": {"type": "integer"}}, [1, "2"], "$[1]: expected", id="items"),
        pytest.param({"enum": [1, 2]}, True, "must be one of", id="true-is-not-1"),
        pytest.param({"type": ["string", "null"]}, 3, "expected a string or a null", id="type-list"),
        pytest.param({"const": "on"}, "off", "must be 'on'", id="const"),
        pytest.param(
            {"type": "object", "additionalProperties": {"type": "integer"}}, {"a": "x"}, "$.a", id="extra-schema"
        ),
        pytest.param({"type": "string", "pattern": "("}, "x", "broken pattern", id="broken-pattern"),
    ],
)
def test_the_schema_subset_refuses_what_it_should(schema: dict[str, Any], value: Any, message: str) -> None:
    with pytest.raises(ArgumentError, match=None) as caught:
        validate(schema, value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        pytest.param({"type": "string", "format": "date-time", "x-anything": [1]}, "x", id="unknown-keywords"),
        pytest.param({"type": "number"}, 3, id="int-is-a-number"),
        pytest.param({"type": "object"}, {"deep": [[[[[[[[1]]]]]]]]}, id="unchecked-depth"),
        pytest.param({"type": "string", "pattern": "[a-z]+"}, "abc", id="pattern"),
        pytest.param({"type": ["string", "null"]}, None, id="null"),
    ],
)
def test_the_schema_subset_accepts_what_it_should(schema: dict[str, Any], value: Any) -> None:
    validate(schema, value)
