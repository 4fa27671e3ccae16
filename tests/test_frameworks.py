"""Agent frameworks unchanged against piagent served for real: LangChain's `bind_tools` (ChatOpenAI through the
OpenAI door, ChatOllama through the Ollama door) and pydantic-ai's structured output, in front of both upstream
protocols (scripted fake model servers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from bench.fakemodel import FakeModel, Script, json_script
from bench.fakemodel import ToolCall as FakeCall
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import serve_in_thread

AGENTS = {"ollama": "general", "openai": "llama"}
PARIS = {"city": "Paris"}


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Weather(BaseModel):
    city: str
    temperature: float


@pytest.fixture
def fake_openai() -> Iterator[FakeModel]:
    with FakeModel() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def url(prompts_dir: Path, make_settings: MakeSettings, fake_openai: FakeModel) -> Iterator[str]:
    (prompts_dir / "llama.md").write_text(
        f"---\nprovider: openai\nurl: {fake_openai.url}\nmodel: gemma\n---\nYou are a llama.\n", encoding="utf-8"
    )
    with serve_in_thread(create_app(make_settings(prompts_dir=str(prompts_dir)))) as base:
        yield base


@pytest.fixture
def fakes(fake_ollama: FakeModel, fake_openai: FakeModel) -> dict[str, FakeModel]:
    return {"ollama": fake_ollama, "openai": fake_openai}


@contextmanager
def chat_model(door: str, url: str, model: str) -> Iterator[Any]:
    """LangChain's chat model for the door; its HTTP clients closed afterwards (LangChain leaves that to GC)."""
    if door == "openai":
        openai_model = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model=model, max_retries=0, timeout=10)  # type: ignore[arg-type]
        try:
            yield openai_model
        finally:
            openai_model.root_client.close()
    else:
        ollama_model = ChatOllama(base_url=url, model=model)
        try:
            yield ollama_model
        finally:
            ollama_model._client._client.close()


@pytest.mark.parametrize("stream", [pytest.param(False, id="invoke"), pytest.param(True, id="stream")])
@pytest.mark.parametrize("kind", ["ollama", "openai"])
@pytest.mark.parametrize("door", ["openai", "ollama"])
def test_langchain_bind_tools_round_trip(
    url: str, fakes: dict[str, FakeModel], door: str, kind: str, stream: bool
) -> None:
    fake = fakes[kind]
    with chat_model(door, url, AGENTS[kind]) as base:
        round_trip(base.bind_tools([get_weather]), fake, stream)


def round_trip(llm: Any, fake: FakeModel, stream: bool) -> None:
    """Ask, get a call, run the tool, send its result back, get the answer: what a LangChain agent loop does."""
    messages: list[Any] = [HumanMessage("Weather in Paris?")]

    def ask() -> AIMessage:
        if not stream:
            answer: AIMessage = llm.invoke(messages)
            return answer
        chunks = list(llm.stream(messages))
        whole = chunks[0]
        for chunk in chunks[1:]:
            whole += chunk
        return AIMessage(content=whole.content, tool_calls=whole.tool_calls)

    fake.script = Script(tokens=[], tool_calls=[FakeCall("get_weather", PARIS)])
    first = ask()
    (call,) = first.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", PARIS)
    assert call["id"]
    assert [spec["function"]["name"] for spec in fake.chat_requests[-1]["tools"]] == ["get_weather"]

    fake.script = Script(tokens=["It is ", "sunny."])
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"], name="get_weather")]
    second = ask()
    assert (second.content, second.tool_calls) == ("It is sunny.", [])
    result = fake.chat_requests[-1]["messages"][-1]
    assert (result["role"], result["content"]) == ("tool", "sunny in Paris")


@asynccontextmanager
async def pydantic_ai_agent(url: str, model: str, output: Any) -> AsyncIterator[Agent[None, Any]]:
    """pydantic-ai's agent on piagent's OpenAI door, with an OpenAI client closed afterwards (its own cached
    one is never closed)."""
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        yield Agent(OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client)), output_type=output)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_pydantic_ai_native_structured_output(url: str, fakes: dict[str, FakeModel], kind: str) -> None:
    fakes[kind].script = json_script({"city": "Paris", "temperature": 24})
    async with pydantic_ai_agent(url, AGENTS[kind], NativeOutput(Weather)) as agent:
        result = await agent.run("Weather in Paris?")
    assert result.output == Weather(city="Paris", temperature=24)
    sent = fakes[kind].chat_requests[-1]
    schema = sent["format"] if kind == "ollama" else sent["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"city", "temperature"}


@pytest.mark.anyio
async def test_pydantic_ai_tool_output_through_an_openai_upstream(url: str, fake_openai: FakeModel) -> None:
    """pydantic-ai's default: the output is a `final_result` tool the model must call (`tool_choice: required`)."""
    fake_openai.script = Script(tokens=[], tool_calls=[FakeCall("final_result", {"city": "Paris", "temperature": 24})])
    async with pydantic_ai_agent(url, "llama", Weather) as agent:
        result = await agent.run("Weather in Paris?")
    assert result.output == Weather(city="Paris", temperature=24)
    assert fake_openai.chat_requests[-1]["tool_choice"] == "required"


@pytest.mark.anyio
async def test_pydantic_ai_tool_output_in_front_of_ollama_is_a_clear_422(url: str, fake_ollama: FakeModel) -> None:
    """Ollama cannot be made to call a tool: refused, naming the field, rather than silently ignored."""
    async with pydantic_ai_agent(url, "general", Weather) as agent:
        with pytest.raises(ModelHTTPError) as refused:
            await agent.run("Weather in Paris?")
    assert refused.value.status_code == 422
    assert "tool_choice" in str(refused.value.body)
    assert fake_ollama.chat_requests == []
