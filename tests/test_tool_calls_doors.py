"""Tool calls and structured output through both front doors in front of both upstream protocols, driven by
the real `openai` and `ollama` packages against piagent served for real.

Each round trip is what agent frameworks do (tests/test_frameworks.py drives LangChain and pydantic-ai
themselves): send `tools` and read the calls back, then send the assistant's calls and a `tool` message
with the result; or send `response_format` / `format` and parse the JSON text of the reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import ollama
import openai
import pytest

from bench.fakemodel import FakeModel, Script
from bench.fakemodel import ToolCall as FakeCall
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import serve_in_thread

# The agent in front of each upstream protocol.
AGENTS = {"ollama": "general", "openai": "llama"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
PARIS = {"city": "Paris"}


@pytest.fixture
def fake_openai() -> Iterator[FakeModel]:
    with FakeModel() as fake:
        yield fake
    assert fake.errors == [], "the fake OpenAI server itself failed"


@pytest.fixture
def url(prompts_dir: Path, make_settings: MakeSettings, fake_openai: FakeModel) -> Iterator[str]:
    """piagent with `general` on the fake Ollama and `llama` on the fake OpenAI-compatible server."""
    (prompts_dir / "llama.md").write_text(
        f"---\nprovider: openai\nurl: {fake_openai.url}\nmodel: gemma\n---\nYou are a llama.\n", encoding="utf-8"
    )
    with serve_in_thread(create_app(make_settings(prompts_dir=str(prompts_dir)))) as base:
        yield base


@pytest.fixture
def openai_sdk(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture
def ollama_sdk(url: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=url, timeout=10)
    try:
        yield client
    finally:
        client.close()


class Upstreams:
    """Scripts the next reply of the upstream behind an agent, and shows the request it got."""

    def __init__(self, fake_ollama: FakeModel, fake_openai: FakeModel) -> None:
        self.ollama = fake_ollama
        self.openai = fake_openai

    def fake(self, kind: str) -> FakeModel:
        return self.ollama if kind == "ollama" else self.openai

    def tool_call(self, kind: str) -> None:
        """A reply that is one call, as each protocol sends it (Ollama's whole, OpenAI's in pieces)."""
        self.fake(kind).script = Script(tokens=[], tool_calls=[FakeCall("get_weather", PARIS, pieces=4)])

    def text(self, kind: str, tokens: list[str]) -> None:
        self.fake(kind).script = Script(tokens=tokens)

    def last(self, kind: str) -> Any:
        return self.fake(kind).chat_requests[-1]


@pytest.fixture
def upstreams(fake_ollama: FakeModel, fake_openai: FakeModel) -> Upstreams:
    return Upstreams(fake_ollama, fake_openai)


def check_history_upstream(kind: str, sent: Any) -> None:
    """The follow-up turn reached the upstream in its own protocol: the call, then its result, paired."""
    assistant, result = sent["messages"][-2:]
    (call,) = assistant["tool_calls"]
    if kind == "ollama":
        assert call["function"] == {"name": "get_weather", "arguments": PARIS}  # an object, as Ollama takes it
        assert (result["role"], result["content"], result["tool_name"]) == ("tool", "sunny, 24 C", "get_weather")
    else:
        assert call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        assert msgspec.json.decode(call["function"]["arguments"]) == PARIS  # a string, as OpenAI takes it
        assert assistant["content"] is None
        assert (result["role"], result["content"], result["tool_call_id"]) == ("tool", "sunny, 24 C", call["id"])


def openai_turn(sdk: openai.OpenAI, model: str, messages: list[Any], stream: bool) -> tuple[str, list[Any], str]:
    """One completion as an agent framework reads it: text, tool calls (put together by index when
    streamed, as LangChain and the SDK's own helpers do) and the finish reason."""
    if not stream:
        completion = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        (choice,) = completion.choices
        calls = [msgspec.to_builtins(call.model_dump()) for call in choice.message.tool_calls or []]
        return choice.message.content or "", calls, choice.finish_reason
    text, finish = "", ""
    calls_by_index: dict[int, dict[str, Any]] = {}
    for chunk in sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER], stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for piece in delta.tool_calls or []:
            call = calls_by_index.setdefault(piece.index, {"id": "", "type": "function", "function": {}})
            if piece.id:
                call["id"] = piece.id
            if piece.function is not None:
                function = call["function"]
                if piece.function.name:
                    function["name"] = piece.function.name
                function["arguments"] = function.get("arguments", "") + (piece.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    return text, [calls_by_index[index] for index in sorted(calls_by_index)], finish


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_tool_call_round_trip_through_the_openai_door(
    openai_sdk: openai.OpenAI, upstreams: Upstreams, kind: str, stream: bool
) -> None:
    model = AGENTS[kind]
    upstreams.tool_call(kind)
    text, calls, finish = openai_turn(openai_sdk, model, ASK, stream)
    assert (text, finish) == ("", "tool_calls")
    (call,) = calls
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert msgspec.json.decode(call["function"]["arguments"]) == PARIS
    sent = upstreams.last(kind)
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["get_weather"]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["function"]["parameters"]  # type: ignore[index]

    upstreams.text(kind, ["It is ", "sunny."])
    follow_up = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 24 C"},
    ]
    text, calls, finish = openai_turn(openai_sdk, model, follow_up, stream)
    assert (text, calls, finish) == ("It is sunny.", [], "stop")
    check_history_upstream(kind, upstreams.last(kind))


def ollama_turn(sdk: ollama.Client, model: str, messages: list[Any], stream: bool) -> tuple[str, Any, str | None]:
    """One chat as an agent framework reads it from the `ollama` package: text, tool calls, done reason."""
    if not stream:
        response = sdk.chat(model=model, messages=messages, tools=[WEATHER], stream=False)
        return response.message.content or "", response.message, response.done_reason
    text, calls, reason = "", [], None
    for part in sdk.chat(model=model, messages=messages, tools=[WEATHER], stream=True):
        text += part.message.content or ""
        calls += part.message.tool_calls or []
        reason = part.done_reason or reason
    return text, ollama.Message(role="assistant", content=text, tool_calls=calls), reason


@pytest.mark.parametrize("stream", [pytest.param(False, id="whole"), pytest.param(True, id="streamed")])
@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_tool_call_round_trip_through_the_ollama_door(
    ollama_sdk: ollama.Client, upstreams: Upstreams, kind: str, stream: bool
) -> None:
    model = AGENTS[kind]
    upstreams.tool_call(kind)
    text, message, reason = ollama_turn(ollama_sdk, model, ASK, stream)
    assert (text, reason) == ("", "stop")  # Ollama says stop, also for tool calls
    (call,) = message.tool_calls
    assert (call.function.name, dict(call.function.arguments)) == ("get_weather", PARIS)
    assert [tool["function"]["name"] for tool in upstreams.last(kind)["tools"]] == ["get_weather"]

    upstreams.text(kind, ["It is ", "sunny."])
    follow_up = [*ASK, message, {"role": "tool", "content": "sunny, 24 C", "tool_name": "get_weather"}]
    text, message, reason = ollama_turn(ollama_sdk, model, follow_up, stream)
    assert (text, message.tool_calls or [], reason) == ("It is sunny.", [], "stop")
    check_history_upstream(kind, upstreams.last(kind))


def test_a_streamed_openai_tool_call_is_written_as_openai_streams_it(
    url: str, upstreams: Upstreams, fake_ollama: FakeModel
) -> None:
    """The name and id in the first piece with empty arguments, then the arguments, each with its index."""
    fake_ollama.script = Script(tokens=[], tool_calls=[FakeCall("get_weather", PARIS), FakeCall("get_time")])
    body = {"model": "general", "messages": ASK, "tools": [WEATHER], "stream": True}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    events = [msgspec.json.decode(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
    deltas = [event["choices"][0]["delta"] for event in events if event["choices"]]
    pieces = [delta["tool_calls"][0] for delta in deltas if "tool_calls" in delta]
    first, second = pieces[0]["id"], pieces[2]["id"]
    assert pieces == [
        {"index": 0, "id": first, "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":"Paris"}'}},
        {"index": 1, "id": second, "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    assert first != second
    assert [event["choices"][0]["finish_reason"] for event in events if event["choices"]][-1] == "tool_calls"


def test_tool_choice_is_translated_for_openai_upstreams(openai_sdk: openai.OpenAI, upstreams: Upstreams) -> None:
    upstreams.tool_call("openai")
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    openai_sdk.chat.completions.create(
        model="llama", messages=ASK, tools=[WEATHER], tool_choice=choice, parallel_tool_calls=False
    )
    sent = upstreams.last("openai")
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == (choice, False)
    upstreams.text("openai", ["no tools"])
    openai_sdk.chat.completions.create(model="llama", messages=ASK, tools=[WEATHER], tool_choice="required")
    assert upstreams.last("openai")["tool_choice"] == "required"


def test_tool_choice_none_sends_an_ollama_upstream_no_tools(openai_sdk: openai.OpenAI, upstreams: Upstreams) -> None:
    upstreams.text("ollama", ["plain"])
    reply = openai_sdk.chat.completions.create(model="general", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert reply.choices[0].message.content == "plain"
    assert "tools" not in upstreams.last("ollama")


@pytest.mark.parametrize(
    "choice",
    [pytest.param("required", id="required"), pytest.param({"type": "function", "function": {"name": "get_weather"}})],
)
def test_a_tool_choice_ollama_cannot_honour_is_a_422_naming_the_field(
    openai_sdk: openai.OpenAI, fake_ollama: FakeModel, choice: Any
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        openai_sdk.chat.completions.create(model="general", messages=ASK, tools=[WEATHER], tool_choice=choice)
    body: Any = refused.value.body
    assert body["param"] == "tool_choice"
    assert "cannot be honoured by the ollama server" in body["message"]
    assert fake_ollama.chat_requests == []  # refused before anything went upstream


STRICT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}},
    "required": ["city", "temperature"],
    "additionalProperties": False,
}
ANSWER = {"city": "Paris", "temperature": 24}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_structured_output_through_the_openai_door(openai_sdk: openai.OpenAI, upstreams: Upstreams, kind: str) -> None:
    """pydantic-ai's native structured output: `response_format` `json_schema`, strict, parsed from the text."""
    upstreams.text(kind, ['{"city": "Paris", ', '"temperature": 24}'])
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "Weather", "schema": STRICT_SCHEMA, "strict": True},
    }
    reply = openai_sdk.chat.completions.create(model=AGENTS[kind], messages=ASK, response_format=response_format)
    assert msgspec.json.decode(reply.choices[0].message.content or "") == ANSWER
    sent = upstreams.last(kind)
    if kind == "ollama":
        assert sent["format"] == STRICT_SCHEMA
    else:
        assert sent["response_format"] == response_format
    upstreams.text(kind, ["{}"])
    openai_sdk.chat.completions.create(model=AGENTS[kind], messages=ASK, response_format={"type": "json_object"})
    sent = upstreams.last(kind)
    assert sent["format"] == "json" if kind == "ollama" else sent["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_structured_output_through_the_ollama_door(ollama_sdk: ollama.Client, upstreams: Upstreams, kind: str) -> None:
    upstreams.text(kind, ['{"city": "Paris", ', '"temperature": 24}'])
    reply = ollama_sdk.chat(model=AGENTS[kind], messages=ASK, format=STRICT_SCHEMA)
    assert msgspec.json.decode(reply.message.content or "") == ANSWER
    sent = upstreams.last(kind)
    if kind == "ollama":
        assert sent["format"] == STRICT_SCHEMA
    else:
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": STRICT_SCHEMA},
        }
    upstreams.text(kind, ["{}"])
    ollama_sdk.chat(model=AGENTS[kind], messages=ASK, format="json")
    sent = upstreams.last(kind)
    assert sent["format"] == "json" if kind == "ollama" else sent["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param(
            "/v1/chat/completions",
            {"tools": [WEATHER] * 5},
            "$.tools",
            id="openai-too-many-tools",
        ),
        pytest.param("/api/chat", {"tools": [WEATHER] * 5}, "$.tools", id="ollama-too-many-tools"),
        pytest.param(
            "/v1/chat/completions",
            {"tools": [{"type": "function", "function": {"name": "deep", "parameters": {"a": [[[[[[{}]]]]]]}}}]},
            "$.tools[0].function.parameters",
            id="openai-deep-schema",
        ),
        pytest.param(
            "/api/chat", {"format": {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}}, "$.format", id="deep-format"
        ),
        pytest.param(
            "/v1/chat/completions",
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "$.tool_choice.function.name",
            id="unknown-named-tool",
        ),
        pytest.param(
            "/v1/chat/completions",
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}],
                    }
                ]
            },
            "$.messages[0].tool_calls[0].function.arguments",
            id="arguments-not-json",
        ),
    ],
)
def test_hostile_tools_get_a_clear_422_naming_the_field(
    make_settings: MakeSettings, fake_ollama: FakeModel, path: str, body: dict[str, Any], field: str
) -> None:
    app = create_app(make_settings(max_tools=4, max_schema_depth=6))
    with serve_in_thread(app) as base:
        response = httpx.post(f"{base}{path}", json={"model": "general", "messages": ASK, **body}, timeout=10)
    assert response.status_code == 422
    message = response.json()["error"]
    if isinstance(message, dict):
        message = message["message"]
    assert message.endswith(f"at `{field}`")
    assert fake_ollama.chat_requests == []
