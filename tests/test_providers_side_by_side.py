"""One app serving an Ollama agent and an OpenAI-compatible agent side by side, each through every door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import Settings, create_app
from piagent.agents import load_agents
from piagent.exceptions import SettingsError
from piagent.providers.factory import ProviderSpec, build_providers, provider_specs
from tests.servers import serve_in_thread

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake_openai() -> Iterator[FakeModel]:
    with FakeModel(models=["fake-model"]) as fake:
        yield fake
    assert fake.errors == [], "the fake OpenAI server itself failed"


@pytest.fixture
def two_agents(prompts_dir: Path, fake_openai: FakeModel) -> Path:
    """`general` on Ollama (the settings' default) and `llama` on the fake OpenAI server, with its own key."""
    (prompts_dir / "llama.md").write_text(
        f"---\ndescription: On llama.cpp.\nprovider: openai\nurl: {fake_openai.url}/v1\nmodel: gemma-3-270m\n"
        "api_key_env: LLAMA_KEY\noptions:\n  temperature: 0.3\n  num_ctx: 4096\n---\nYou are a llama.\n",
        encoding="utf-8",
    )
    fake_openai.api_key = "sk-llama"
    return prompts_dir


@pytest.fixture
def url(two_agents: Path, make_settings: Any) -> Iterator[str]:
    app = create_app(make_settings(prompts_dir=str(two_agents)), environ={"LLAMA_KEY": "sk-llama"})
    with serve_in_thread(app) as base:
        yield base


def test_chat_reaches_each_agents_own_upstream_with_its_model_and_key(
    url: str, fake_ollama: FakeModel, fake_openai: FakeModel
) -> None:
    fake_ollama.script = Script(tokens=["from ", "ollama"])
    fake_openai.script = Script(tokens=["from ", "llama"], prompt_eval_count=3)
    with httpx.Client(base_url=url, timeout=10) as client:
        on_ollama = client.post("/chat", json={"message": "hi"}).json()
        on_llama = client.post("/chat", json={"message": "hi", "agent": "llama"}).json()
        again = client.post(
            "/chat", json={"message": "more", "agent": "llama", "conversation_id": on_llama["conversation_id"]}
        ).json()
    assert (on_ollama["reply"], on_ollama["model"]) == ("from ollama", "test-model")
    assert (on_llama["reply"], on_llama["model"], on_llama["usage"]) == (
        "from llama",
        "gemma-3-270m",
        {"prompt_tokens": 3, "completion_tokens": 2},
    )
    assert again["reply"] == "from llama"
    assert len(fake_ollama.chat_requests) == 1
    first, second = fake_openai.chat_requests
    assert first["model"] == "gemma-3-270m"
    assert first["temperature"] == 0.3
    assert "num_ctx" not in first
    assert second["messages"] == [
        {"role": "system", "content": "You are a llama."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "from llama"},
        {"role": "user", "content": "more"},
    ]
    assert {r.headers["authorization"] for r in fake_openai.requests} == {"Bearer sk-llama"}
    assert all("authorization" not in r.headers for r in fake_ollama.requests)


def test_every_door_serves_both_agents(url: str, fake_ollama: FakeModel, fake_openai: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["O"])
    fake_openai.script = Script(tokens=["L"])
    with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["general", "llama", "pirate"]
        for agent, text in (("general", "O"), ("llama", "L")):
            assert sdk.chat.completions.create(model=agent, messages=HI).choices[0].message.content == text
            chunks = sdk.chat.completions.create(model=agent, messages=HI, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    with httpx.Client(base_url=url, timeout=10) as client:
        for agent, text in (("general", "O"), ("llama", "L")):
            lines = client.post("/api/chat", json={"model": agent, "messages": HI}).text.splitlines()
            assert msgspec.json.decode(lines[0])["message"]["content"] == text
            sse = client.post(
                "/chat", json={"message": "hi", "agent": agent, "stream": True}, headers={"Accept": "text/event-stream"}
            )
            assert f'"text":"{text}"' in sse.text


def test_deep_health_reports_each_upstream_by_name(url: str) -> None:
    body = httpx.get(f"{url}/health", params={"deep": "1"}).json()
    assert body["status"] == "ok"
    assert [(u["name"], u["status"]) for u in body["upstreams"]] == [("ollama", "ok"), ("openai", "ok")]


def test_a_mid_stream_error_from_the_openai_upstream_ends_the_sse_stream_with_an_error_event(
    url: str, fake_openai: FakeModel
) -> None:
    fake_openai.script = Script(tokens=["a", "b"], error_after=1, error="llama crashed")
    response = httpx.post(
        f"{url}/chat",
        json={"message": "hi", "agent": "llama", "stream": True},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    assert response.text.endswith(
        'event: error\ndata: {"event":"error","code":"upstream_error","message":"openai: llama crashed",'
        f'"request_id":"{request_id}"}}\n\n'
    )


def test_an_unset_api_key_variable_stops_start_up_naming_agent_and_variable(
    two_agents: Path, make_settings: Any
) -> None:
    with pytest.raises(SettingsError) as caught:
        create_app(make_settings(prompts_dir=str(two_agents)), environ={})
    assert caught.value.message == "agent 'llama': api_key_env names LLAMA_KEY, which is not set in the environment"


def test_the_settings_choose_the_provider_url_and_key_of_agents_that_name_none(
    prompts_dir: Path, fake_openai: FakeModel
) -> None:
    fake_openai.api_key = "sk-default"
    settings = Settings(
        provider="openai",
        openai_url=fake_openai.url,
        openai_api_key="sk-default",
        prompts_dir=str(prompts_dir),
        model="m",
    )
    with serve_in_thread(create_app(settings, environ={})) as base:
        reply = httpx.post(f"{base}/chat", json={"message": "hi", "agent": "pirate"}).json()
    assert reply["reply"] == "Hello, world!"
    assert fake_openai.chat_requests[-1]["model"] == "pirate-model"


def specs_for(tmp_path: Path, files: dict[str, str], settings: Settings, environ: dict[str, str]) -> Any:
    for name, text in files.items():
        (tmp_path / f"{name}.md").write_text(text, encoding="utf-8")
    agents = load_agents(tmp_path, next(iter(files)), "m", 20, settings.provider)
    return provider_specs(settings, agents, environ)


@pytest.mark.anyio
async def test_one_provider_per_distinct_protocol_urls_and_key_sharing_upstreams(tmp_path: Path) -> None:
    settings = Settings(ollama_url="http://a:11434,http://b:11434", openai_url="http://llama:8080/v1")
    files = {
        "one": "x",
        "two": "x",
        "three": "---\nurl: http://b:11434, http://c:11434\n---\nx",
        "four": "---\nprovider: openai\n---\nx",
        "five": "---\nprovider: openai\nurl: http://llama:8080\napi_key_env: KEY\n---\nx",
    }
    specs = specs_for(tmp_path, files, settings, {"KEY": "k"})
    assert specs["one"] == ProviderSpec("ollama", ("http://a:11434", "http://b:11434"), "")
    assert specs["four"] == ProviderSpec("openai", ("http://llama:8080",), "")
    async with httpx.AsyncClient() as client:
        providers = build_providers(specs, settings, client)
    assert providers["one"] is providers["two"]
    assert len({id(p) for p in providers.values()}) == 4
    names = {name: [(u.name, u.url) for u in provider.upstreams] for name, provider in providers.items()}
    assert names["one"] == [("ollama#1", "http://a:11434"), ("ollama#2", "http://b:11434")]
    assert names["three"] == [("ollama#2", "http://b:11434"), ("ollama#3", "http://c:11434")]
    assert names["four"] == names["five"] == [("openai", "http://llama:8080")]
    # The same server is one Upstream, so its in-flight count is the server's, whichever agent uses it.
    assert providers["one"].upstreams[1] is providers["three"].upstreams[0]
    assert providers["four"].upstreams[0] is providers["five"].upstreams[0]
