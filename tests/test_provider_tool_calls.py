"""Tool calls and structured output through both providers: what they send upstream, and the calls they
parse back (Ollama's whole in one line, OpenAI's put together from streamed pieces), bounded like text."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest
import respx

from bench.fakemodel import FakeModel, Script
from bench.fakemodel import ToolCall as FakeCall
from piagent.exceptions import UpstreamError
from piagent.providers.base import Completion, Message, OutputFormat, Timings, ToolCall, Tools, ToolSpec
from piagent.providers.ollama import OllamaProvider
from piagent.providers.openai import OpenAIProvider
from piagent.providers.pool import UpstreamPool
from piagent.providers.tooling import ToolCallLimits
from tests.upstream import Chunks, cut, ollama_tool_lines, openai_call_pieces, openai_tool_events

pytestmark = pytest.mark.anyio


def ollama_pool(url: str) -> UpstreamPool:
    return UpstreamPool.from_urls("ollama", [url])


def openai_pool(url: str) -> UpstreamPool:
    return UpstreamPool.from_urls("openai", [url])


WEATHER = ToolSpec(
    "get_weather", "The weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
TOOLS = Tools((WEATHER,))
HISTORY = [
    Message("user", "weather in Paris?"),
    Message("assistant", "", (ToolCall("call_7", "get_weather", '{"city":"Paris"}'),)),
    Message("tool", "sunny", tool_call_id="call_7", tool_name="get_weather"),
]


@pytest.fixture
def fake_openai() -> Iterator[FakeModel]:
    with FakeModel() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def run(provider: Any, messages: list[Message] | None = None, **kwargs: Any) -> list[Any]:
    return [item async for item in provider.stream_chat("m", messages or HISTORY[:1], {}, **kwargs)]


async def test_ollama_sends_tools_format_and_the_history_with_arguments_as_objects(
    http: httpx.AsyncClient, fake_ollama: FakeModel
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    await run(OllamaProvider(http, ollama_pool(fake_ollama.url)), HISTORY, tools=TOOLS, output=OutputFormat(schema))
    sent = fake_ollama.chat_requests[-1]
    assert sent["tools"] == [{"type": "function", "function": msgspec.to_builtins(WEATHER)}]
    assert sent["format"] == schema
    assert sent["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "call_7"}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    await run(OllamaProvider(http, ollama_pool(fake_ollama.url)), output=OutputFormat())
    assert fake_ollama.chat_requests[-1]["format"] == "json"
    await run(OllamaProvider(http, ollama_pool(fake_ollama.url)), tools=Tools((WEATHER,), "none"))
    assert "tools" not in fake_ollama.chat_requests[-1]


async def test_ollama_tool_calls_arrive_whole_with_new_ids_and_arguments_as_json_text(
    http: httpx.AsyncClient, fake_ollama: FakeModel
) -> None:
    calls = [FakeCall("get_weather", {"city": "Paris", "days": [1, 2]}), FakeCall("get_time")]
    fake_ollama.script = Script(tokens=["Let me look."], tool_calls=calls)
    items = await run(OllamaProvider(http, ollama_pool(fake_ollama.url)), tools=TOOLS)
    text, first, second, completion = items
    assert text == "Let me look."
    assert (first.name, msgspec.json.decode(first.arguments)) == ("get_weather", {"city": "Paris", "days": [1, 2]})
    assert (second.name, second.arguments) == ("get_time", "{}")
    assert first.id.startswith("call_")
    assert second.id.startswith("call_")
    assert first.id != second.id
    assert completion == Completion("stop", 7, 1, Timings(1000, 1000, 5000))


async def test_ollama_keeps_the_ids_newer_versions_send(http: httpx.AsyncClient, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(raw_body=[ollama_tool_lines([("f", {"a": 1})], ids=True)])
    (call, _) = await run(OllamaProvider(http, ollama_pool(fake_ollama.url)), tools=TOOLS)
    assert call == ToolCall("call_0", "f", '{"a":1}')


async def test_openai_sends_tools_choice_and_format_and_the_history_with_ids(
    http: httpx.AsyncClient, fake_openai: FakeModel
) -> None:
    tools = Tools((WEATHER,), "function", "get_weather", parallel=False)
    output = OutputFormat({"type": "object"}, "answer", strict=True)
    await run(OpenAIProvider(http, openai_pool(fake_openai.url)), HISTORY, tools=tools, output=output)
    sent = fake_openai.chat_requests[-1]
    assert sent["tools"] == [{"type": "function", "function": msgspec.to_builtins(WEATHER)}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert sent["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_7"},
    ]
    await run(
        OpenAIProvider(http, openai_pool(fake_openai.url)), tools=Tools((WEATHER,), "required"), output=OutputFormat()
    )
    sent = fake_openai.chat_requests[-1]
    assert (sent["tool_choice"], sent["response_format"]) == ("required", {"type": "json_object"})
    await run(OpenAIProvider(http, openai_pool(fake_openai.url)), tools=TOOLS)
    assert "tool_choice" not in fake_openai.chat_requests[-1]  # auto: every server's default


async def test_openai_streamed_pieces_become_whole_calls_in_index_order(
    http: httpx.AsyncClient, fake_openai: FakeModel
) -> None:
    first = openai_call_pieces(0, "call_a", "get_weather", '{"city": "Paris \\u00e9"}')
    second = openai_call_pieces(1, "call_b", "get_time", "")
    interleaved = [first[0], second[0], *first[1:], *second[1:]]
    fake_openai.script = Script(raw_body=[openai_tool_events(interleaved, text="Checking.")])
    items = await run(OpenAIProvider(http, openai_pool(fake_openai.url)), tools=TOOLS)
    assert items == [
        "Checking.",
        ToolCall("call_a", "get_weather", '{"city": "Paris \\u00e9"}'),
        ToolCall("call_b", "get_time", "{}"),
        Completion("tool_calls", 5, 1),
    ]


@respx.mock
async def test_any_cut_of_the_upstream_bytes_gives_the_same_calls(http: httpx.AsyncClient) -> None:
    arguments = '{"city":"Grüß 🥧\u2028"}'
    bodies = {
        "ollama": ollama_tool_lines([("get_weather", msgspec.json.decode(arguments))]),
        "openai": openai_tool_events(openai_call_pieces(0, "call_a", "get_weather", arguments, size=3)),
    }
    for kind, body in bodies.items():
        url = "http://model.test"
        route = respx.post(f"{url}/api/chat" if kind == "ollama" else f"{url}/v1/chat/completions")
        provider: Any = (
            OllamaProvider(http, ollama_pool(url)) if kind == "ollama" else OpenAIProvider(http, openai_pool(url))
        )
        for position in range(0, len(body) + 1, 7):
            route.mock(return_value=httpx.Response(200, stream=Chunks(cut(body, [position, position + 2]))))
            calls = [item for item in await run(provider) if isinstance(item, ToolCall)]
            assert [(c.name, msgspec.json.decode(c.arguments)) for c in calls] == [
                ("get_weather", msgspec.json.decode(arguments))
            ], (kind, position)


def _bodies(count: int, arguments: str) -> dict[str, bytes]:
    return {
        "ollama": ollama_tool_lines([("f", msgspec.json.decode(arguments))] * count),
        "openai": openai_tool_events(
            [piece for index in range(count) for piece in openai_call_pieces(index, f"c{index}", "f", arguments)]
        ),
    }


@pytest.mark.parametrize(
    ("count", "arguments", "message"),
    [
        pytest.param(3, "{}", "more than 2 tool calls in one reply", id="too-many-calls"),
        pytest.param(1, '{"a":"' + "x" * 40 + '"}', "tool call arguments over 32 bytes", id="arguments-too-long"),
    ],
)
async def test_tool_calls_are_bounded_like_text(
    http: httpx.AsyncClient, fake_ollama: FakeModel, fake_openai: FakeModel, count: int, arguments: str, message: str
) -> None:
    limits = ToolCallLimits(max_calls=2, max_argument_bytes=32)
    bodies = _bodies(count, arguments)
    fake_ollama.script = Script(raw_body=[bodies["ollama"]])
    fake_openai.script = Script(raw_body=[bodies["openai"]])
    for provider in (
        OllamaProvider(http, ollama_pool(fake_ollama.url), tool_limits=limits),
        OpenAIProvider(http, openai_pool(fake_openai.url), tool_limits=limits),
    ):
        with pytest.raises(UpstreamError, match=message):
            await run(provider)


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(openai_call_pieces(0, "c", "f", "[1, 2]"), id="an-array"),
        pytest.param(openai_call_pieces(0, "c", "f", '{"a": '), id="cut-short"),
        pytest.param(openai_call_pieces(0, "c", "", "{}"), id="no-name"),
    ],
)
async def test_arguments_that_are_no_json_object_are_an_upstream_error(
    http: httpx.AsyncClient, fake_openai: FakeModel, pieces: list[dict[str, object]]
) -> None:
    fake_openai.script = Script(raw_body=[openai_tool_events(pieces)])
    with pytest.raises(UpstreamError, match="tool call"):
        await run(OpenAIProvider(http, openai_pool(fake_openai.url)))
