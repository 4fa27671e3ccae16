"""The OpenAI-compatible front door, driven by the real `openai` package against piagent served for real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest

from bench.fakemodel import FakeModel, Script
from piagent.http.openai_schemas import ChatCompletionChunk, ChunkChoice, ChunkDelta
from tests.bodies import error_body

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def sdk(server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=10) as client:
        yield client


def test_every_agent_is_listed_as_a_model(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    assert [(m.id, m.object, m.owned_by) for m in models] == [
        ("general", "model", "piagent"),
        ("pirate", "model", "piagent"),
    ]
    assert all(m.created > 1_600_000_000 for m in models)


def test_one_agent_is_retrieved_as_a_model(sdk: openai.OpenAI) -> None:
    assert sdk.models.retrieve("pirate").id == "pirate"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("nope")
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "model_not_found"


def test_a_non_streamed_completion_as_the_sdk_reads_it(sdk: openai.OpenAI, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["Ahoy", "!"], prompt_eval_count=12, done_reason="length")
    completion = sdk.chat.completions.create(model="pirate", messages=HI, max_tokens=2)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "pirate"
    (choice,) = completion.choices
    assert (choice.index, choice.message.role, choice.message.content) == (0, "assistant", "Ahoy!")
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        12,
        2,
        14,
    )


def test_the_agents_system_prompt_goes_before_the_clients_messages(sdk: openai.OpenAI, fake_ollama: FakeModel) -> None:
    messages: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "earlier reply"},
        {"role": "user", "content": "three"},
    ]
    sdk.chat.completions.create(model="pirate", messages=messages, temperature=1.5, seed=4, stop="\n", top_p=0.5)
    sent = fake_ollama.chat_requests[-1]
    assert sent["model"] == "pirate-model"
    assert sent["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one two"},
        {"role": "assistant", "content": "earlier reply"},
        {"role": "user", "content": "three"},
    ]
    assert sent["options"] == {
        "temperature": 1.5,
        "num_ctx": 512,
        "top_p": 0.5,
        "seed": 4,
        "stop": ["\n"],
        "num_predict": 1024,  # PIAGENT_MAX_TOKENS, as neither the agent nor the client sets a length
    }


def test_max_completion_tokens_wins_over_max_tokens(sdk: openai.OpenAI, fake_ollama: FakeModel) -> None:
    sdk.chat.completions.create(model="general", messages=HI, max_tokens=50, max_completion_tokens=7)
    assert fake_ollama.chat_requests[-1]["options"] == {"num_predict": 7}


def test_it_is_stateless_nothing_is_remembered(sdk: openai.OpenAI, client: httpx.Client) -> None:
    sdk.chat.completions.create(model="general", messages=HI)
    sdk.chat.completions.create(model="general", messages=HI, stream=True).close()
    assert client.get("/health").json()["conversations"] == 0


@pytest.mark.parametrize("include_usage", [pytest.param(True, id="with-usage"), pytest.param(False, id="no-usage")])
def test_a_streamed_completion_as_the_sdk_reads_it(
    sdk: openai.OpenAI, fake_ollama: FakeModel, include_usage: bool
) -> None:
    fake_ollama.script = Script(tokens=["Hel", "lo", " \u2028"], prompt_eval_count=9)
    stream = sdk.chat.completions.create(
        model="general", messages=HI, stream=True, stream_options={"include_usage": include_usage}
    )
    chunks = list(stream)
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {(c.object, c.model) for c in chunks} == {("chat.completion.chunk", "general")}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello \u2028"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes == [None, None, None, None, "stop"]
    usage = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert chunks[-1].choices == []
        assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in usage] == [(9, 3, 12)]
    else:
        assert usage == []


def test_tokens_arrive_as_they_are_generated(server: str, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c", "d", "e"], delay=0.1)
    arrivals = []
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as sdk:
        started = time.monotonic()
        for chunk in sdk.chat.completions.create(model="general", messages=HI, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[0] < 0.3 < 0.4 <= arrivals[-1]


def test_the_raw_stream_is_sse_with_done_and_token_chunks_equal_to_the_struct_encoding(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(tokens=['"quoted" \\ and </script>'])
    response = client.post("/v1/chat/completions", json={"model": "general", "messages": HI, "stream": True})
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "x-conversation-id" not in response.headers
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    first = msgspec.json.decode(events[0].removeprefix("data: "))
    token = ChatCompletionChunk(
        first["id"],
        "chat.completion.chunk",
        first["created"],
        "general",
        [ChunkChoice(0, ChunkDelta(content='"quoted" \\ and </script>'), None)],
    )
    assert events[1].encode() == b"data: " + msgspec.json.encode(token)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        pytest.param(
            {"model": "nope", "messages": HI},
            404,
            {"type": "invalid_request_error", "code": "model_not_found", "param": None},
            id="unknown-model",
        ),
        pytest.param(
            {"model": "general", "messages": [{"role": "user", "content": 5}]},
            422,
            {"type": "invalid_request_error", "code": "validation_error", "param": "messages[0].content"},
            id="wrong-type",
        ),
        pytest.param(
            {"model": "general", "messages": []},
            422,
            {"type": "invalid_request_error", "code": "validation_error", "param": "messages"},
            id="no-messages",
        ),
        pytest.param(
            {"model": "general", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            422,
            {"type": "invalid_request_error", "code": "validation_error", "param": "messages[0].content[0].type"},
            id="image",
        ),
        pytest.param(
            {"model": "general", "messages": HI, "n": 2},
            422,
            {"type": "invalid_request_error", "code": "validation_error", "param": "n"},
            id="n-2",
        ),
    ],
)
def test_bad_requests_get_openais_error_shape(
    client: httpx.Client, body: dict[str, Any], status: int, expected: dict[str, Any]
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    error = error_body(response)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert {key: error[key] for key in expected} == expected
    assert error["message"]


def test_unknown_fields_that_sdks_send_are_accepted(client: httpx.Client) -> None:
    body = {"model": "general", "messages": HI, "user": "u1", "logprobs": False, "tools": [], "n": 1}
    assert client.post("/v1/chat/completions", json=body).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        pytest.param("GET", "/v1/chat/completions", 405, "method_not_allowed", id="wrong-method"),
        pytest.param("GET", "/v1/embeddings", 404, "not_found", id="unknown-route"),
        pytest.param("POST", "/v1/chat/completions", 400, "invalid_json", id="not-json"),
    ],
)
def test_routing_errors_under_v1_use_openais_shape_too(
    client: httpx.Client, method: str, path: str, status: int, code: str
) -> None:
    response = client.request(method, path, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_sdk_raises_its_own_errors(sdk: openai.OpenAI, fake_ollama: FakeModel) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="nope", messages=HI)
    assert "known agents: general, pirate" in missing.value.message
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "model_not_found"
    fake_ollama.script = Script(status=404, error="model 'pirate-model' not found")
    with pytest.raises(openai.APIStatusError) as upstream:
        sdk.chat.completions.create(model="pirate", messages=HI, stream=True)
    assert upstream.value.status_code == 502
    assert "ollama: model 'pirate-model' not found (HTTP 404)" in upstream.value.message


def test_a_mid_stream_upstream_error_reaches_the_sdk_as_an_error(sdk: openai.OpenAI, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c"], error_after=2, error="out of memory")
    received: list[str | None] = []

    def read_all() -> None:
        for chunk in sdk.chat.completions.create(model="general", messages=HI, stream=True):
            received.extend(choice.delta.content for choice in chunk.choices)

    with pytest.raises(openai.APIError, match="ollama: out of memory"):
        read_all()
    assert "".join(filter(None, received)) == "ab"


def test_an_unreachable_upstream_is_503_in_openais_shape(serve: Any) -> None:
    with serve(ollama_url="http://127.0.0.1:9") as url:
        response = httpx.post(f"{url}/v1/chat/completions", json={"model": "general", "messages": HI})
    assert response.status_code == 503
    assert error_body(response) == {
        "error": {
            "message": "ollama is unreachable (connection refused or no route); is it running?",
            "type": "server_error",
            "param": None,
            "code": "upstream_unavailable",
        }
    }


def test_the_stream_closes_upstream_when_the_client_leaves(server: str, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["t"] * 200, delay=0.05)
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as sdk:
        stream = sdk.chat.completions.create(model="general", messages=HI, stream=True)
        next(iter(stream))
        left = time.monotonic()
        stream.close()
    closed = fake_ollama.wait_for_client_close(timeout=2, after=left)
    assert closed is not None
    assert closed - left < 0.3


@pytest.mark.anyio
async def test_the_async_sdk_streams_too(server: str, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["x", "y"])
    async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(model="general", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "xy"


def test_a_reply_longer_than_piagent_allows_is_refused_naming_the_field(client: httpx.Client) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        response = client.post("/v1/chat/completions", json={"model": "general", "messages": HI, field: 5000})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == field
        assert "at most 1024" in response.json()["error"]["message"]


def test_with_api_keys_on_the_sdk_key_is_piagents_key(serve: Any) -> None:
    key = "sdk-key-0123456789-abcdef"
    with serve(api_keys=(key,)) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as sdk:
            assert [m.id for m in sdk.models.list()] == ["general", "pirate"]
            assert sdk.chat.completions.create(model="general", messages=HI).choices[0].message.content
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="not-the-key-0123456789", max_retries=0) as wrong,
            pytest.raises(openai.AuthenticationError) as refused,
        ):
            wrong.models.list()
    assert refused.value.status_code == 401
    assert refused.value.response.headers["www-authenticate"] == "Bearer"
    assert refused.value.body == {
        "message": "the API key is not valid",
        "type": "authentication_error",
        "param": None,
        "code": "unauthorized",
        "request_id": refused.value.request_id,  # the SDK reads X-Request-Id: the same id
    }
