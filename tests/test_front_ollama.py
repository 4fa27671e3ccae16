"""The Ollama-compatible front door, driven by the real `ollama` package against piagent served for real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import ollama
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import __version__
from tests.bodies import error_body

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(server: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server, timeout=10)  # it has __exit__ but no __enter__: close it by hand
    try:
        yield client
    finally:
        client.close()


def test_every_agent_is_listed_as_a_model(sdk: ollama.Client) -> None:
    models = sdk.list().models
    assert [m.model for m in models] == ["general", "pirate"]
    pirate = models[1]
    assert pirate.details is not None
    assert (pirate.details.parent_model, pirate.details.family) == ("pirate-model", "ollama")
    assert pirate.digest is not None
    assert len(pirate.digest) == 64
    assert pirate.modified_at is not None


def test_version_is_piagents(client: httpx.Client) -> None:
    assert client.get("/api/version").json() == {"version": __version__}


def test_a_non_streamed_chat_as_the_client_reads_it(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["Ahoy", "!"], prompt_eval_count=12, done_reason="length")
    response = sdk.chat(model="pirate", messages=HI, stream=False, options={"num_predict": 2, "num_ctx": 99999})
    assert response.model == "pirate"
    assert (response.message.role, response.message.content) == ("assistant", "Ahoy!")
    assert (response.done, response.done_reason) == (True, "length")
    assert (response.prompt_eval_count, response.eval_count) == (12, 2)
    assert response.total_duration is not None
    assert response.total_duration > 0
    # Load-time options (num_ctx) stay the agent's: a client cannot size the model on someone's Pi.
    assert fake_ollama.chat_requests[-1]["options"] == {"temperature": 0.1, "num_ctx": 512, "num_predict": 2}


def test_a_streamed_chat_as_the_client_reads_it(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    # The package splits lines with str.splitlines(), so U+2028 and friends must travel escaped.
    fake_ollama.script = Script(tokens=["Hel", "lo", " \u2028\u2029\u0085"], prompt_eval_count=9)
    parts = list(sdk.chat(model="general", messages=HI, stream=True))
    assert "".join(p.message.content or "" for p in parts) == "Hello \u2028\u2029\u0085"
    assert [p.done for p in parts] == [False, False, False, True]
    assert {p.model for p in parts} == {"general"}
    last = parts[-1]
    assert (last.done_reason, last.prompt_eval_count, last.eval_count) == ("stop", 9, 3)


def test_the_agents_system_prompt_goes_before_the_clients_messages(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "two"},
    ]
    sdk.chat(model="pirate:latest", messages=messages, options={"temperature": 0.5, "seed": 3, "stop": ["x"]})
    sent = fake_ollama.chat_requests[-1]
    assert sent["model"] == "pirate-model"
    assert sent["messages"] == [{"role": "system", "content": "You are a pirate."}, *messages]
    # PIAGENT_MAX_TOKENS (1,024) is the reply length when neither the agent nor the client sets one.
    assert sent["options"] == {"temperature": 0.5, "num_ctx": 512, "seed": 3, "stop": ["x"], "num_predict": 1024}


def test_stream_defaults_to_true_as_in_ollama(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b"])
    response = client.post("/api/chat", json={"model": "general", "messages": HI})
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "x-conversation-id" not in response.headers
    lines = [msgspec.json.decode(line) for line in response.text.splitlines()]
    assert [(line["message"]["content"], line["done"]) for line in lines] == [("a", False), ("b", False), ("", True)]
    assert set(lines[0]) == {"model", "created_at", "message", "done"}
    whole = client.post("/api/chat", json={"model": "general", "messages": HI, "stream": False})
    assert whole.headers["content-type"] == "application/json"
    assert whole.json()["message"] == {"role": "assistant", "content": "ab"}


def test_tokens_arrive_as_they_are_generated(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c", "d", "e"], delay=0.1)
    started = time.monotonic()
    arrivals = [time.monotonic() - started for p in sdk.chat(model="general", messages=HI, stream=True) if not p.done]
    assert len(arrivals) == 5
    assert arrivals[0] < 0.3 < 0.4 <= arrivals[-1]


def test_it_is_stateless_nothing_is_remembered(sdk: ollama.Client, client: httpx.Client) -> None:
    sdk.chat(model="general", messages=HI)
    list(sdk.chat(model="general", messages=HI, stream=True))
    assert client.get("/health").json()["conversations"] == 0


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        pytest.param({"model": "nope", "messages": HI}, 404, "no agent named 'nope'", id="unknown-model"),
        pytest.param({"model": "general", "messages": []}, 422, "$.messages", id="no-messages"),
        pytest.param(
            {"model": "general", "messages": [{"role": "user", "content": "hi", "images": ["iVBOR"]}]},
            422,
            "images are not served",
            id="images",
        ),
        pytest.param(
            {"model": "general", "messages": HI, "options": {"temperature": 9}}, 422, "temperature", id="option-range"
        ),
    ],
)
def test_bad_requests_get_ollamas_error_shape(
    client: httpx.Client, body: dict[str, Any], status: int, text: str
) -> None:
    response = client.post("/api/chat", json=body)
    assert response.status_code == status
    body = error_body(response)
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert text in body["error"]


def test_routing_errors_under_api_use_ollamas_shape(client: httpx.Client) -> None:
    assert error_body(client.get("/api/chat")) == {"error": "GET is not allowed on /api/chat"}
    assert error_body(client.post("/api/embed", json={})) == {"error": "no route for POST /api/embed"}


def test_the_client_raises_its_own_errors(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        sdk.chat(model="nope", messages=HI)
    assert missing.value.status_code == 404
    assert missing.value.error == "no agent named 'nope'; known agents: general, pirate"
    fake_ollama.script = Script(tokens=["a", "b", "c"], error_after=2, error="out of memory")
    received: list[str | None] = []

    def read_all() -> None:
        received.extend(part.message.content for part in sdk.chat(model="general", messages=HI, stream=True))

    with pytest.raises(ollama.ResponseError, match="ollama: out of memory"):
        read_all()
    assert received == ["a", "b"]


def test_an_upstream_error_before_the_first_token_is_a_status(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(status=503, error="server busy")
    with pytest.raises(ollama.ResponseError) as busy:
        list(sdk.chat(model="general", messages=HI, stream=True))
    assert busy.value.status_code == 503
    assert busy.value.error == "ollama: server busy (HTTP 503)"


@pytest.mark.anyio
async def test_the_async_client_streams_too(server: str, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["x", "y"])
    client = ollama.AsyncClient(host=server)
    try:
        stream = await client.chat(model="general", messages=HI, stream=True)
        assert "".join([part.message.content or "" async for part in stream]) == "xy"
    finally:
        await client.close()


def test_a_reply_longer_than_piagent_allows_is_refused_naming_the_option(client: httpx.Client) -> None:
    response = client.post("/api/chat", json={"model": "general", "messages": HI, "options": {"num_predict": 5000}})
    assert response.status_code == 422
    assert error_body(response) == {
        "error": "num_predict is 5000; at most 1024 are allowed - at `$.options.num_predict`"
    }
