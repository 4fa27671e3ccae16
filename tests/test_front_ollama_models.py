"""The rest of the Ollama-compatible door as the real `ollama` package uses it: `/api/generate`, `/api/show`,
`/api/ps`, and the timings of the final object relayed from the upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import ollama
import pytest

from bench.fakemodel import FakeModel, Script


@pytest.fixture
def sdk(server: str) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server, timeout=10)
    try:
        yield client
    finally:
        client.close()


def test_generate_answers_a_prompt_with_the_agents_prompt_first(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["Ahoy", "!"], prompt_eval_count=12, done_reason="length")
    response = sdk.generate(model="pirate", prompt="Say hi", system="Be brief.", options={"num_predict": 2})
    assert (response.model, response.response, response.done, response.done_reason) == (
        "pirate",
        "Ahoy!",
        True,
        "length",
    )
    assert (response.prompt_eval_count, response.eval_count) == (12, 2)
    sent = fake_ollama.chat_requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]
    assert sent["options"]["num_predict"] == 2


def test_generate_streams_response_pieces_as_they_come(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "\u2028b", "c", "d", "e"], delay=0.1)
    started = time.monotonic()
    arrivals, text, parts = [], "", []
    for part in sdk.generate(model="general:latest", prompt="hi", stream=True, format="json"):
        if part.response:
            arrivals.append(time.monotonic() - started)
        text += part.response
        parts.append(part)
    assert text == "a\u2028bcde"
    assert arrivals[0] < 0.3 < 0.35 <= arrivals[-1]
    assert [p.done for p in parts] == [False] * 5 + [True]
    assert parts[-1].done_reason == "stop"
    assert fake_ollama.chat_requests[-1]["format"] == "json"


def test_generate_with_an_empty_prompt_only_loads(sdk: ollama.Client, fake_ollama: FakeModel) -> None:
    response = sdk.generate(model="general", prompt="", stream=False)
    assert (response.response, response.done, response.done_reason) == ("", True, "load")
    assert fake_ollama.chat_requests == []
    with pytest.raises(ollama.ResponseError) as missing:
        sdk.generate(model="nope", prompt="")
    assert missing.value.status_code == 404


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param({"raw": True}, "$.raw", id="raw"),
        pytest.param({"suffix": "}"}, "$.suffix", id="suffix"),
        pytest.param({"images": ["aGk="]}, "$.images", id="images"),
    ],
)
def test_what_a_chat_cannot_honour_is_a_422_naming_the_field(
    client: httpx.Client, fake_ollama: FakeModel, extra: dict[str, Any], field: str
) -> None:
    response = client.post("/api/generate", json={"model": "general", "prompt": "hi", **extra})
    assert response.status_code == 422
    assert response.json()["error"].endswith(f"at `{field}`")
    assert fake_ollama.chat_requests == []


def test_the_timings_of_the_final_object_are_relayed_from_the_upstream(
    sdk: ollama.Client, fake_ollama: FakeModel
) -> None:
    chat = sdk.chat(model="general", messages=[{"role": "user", "content": "hi"}])
    parts = list(sdk.generate(model="general", prompt="hi", stream=True))
    for final in (chat, parts[-1]):
        # The fake Ollama's own figures (nanoseconds); the total is piagent's own, which includes them.
        assert (final.load_duration, final.prompt_eval_duration, final.eval_duration) == (1000, 1000, 5000)
        assert final.total_duration is not None
        assert final.total_duration > 7000


def test_show_gives_what_clients_read_and_never_the_system_prompt(sdk: ollama.Client) -> None:
    shown = sdk.show("pirate:latest")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details is not None
    assert (shown.details.parent_model, shown.details.family) == ("pirate-model", "ollama")
    assert shown.parameters is not None
    assert shown.parameters.splitlines() == [f"{'temperature':<30} 0.1", f"{'num_ctx':<30} 512"]
    assert shown.modelfile is not None
    assert "FROM pirate-model" in shown.modelfile
    assert "pirate" in shown.modelfile
    assert "You are a pirate" not in msgspec.json.encode(shown.model_dump()).decode()
    with pytest.raises(ollama.ResponseError) as missing:
        sdk.show("nope")
    assert missing.value.status_code == 404


def test_ps_lists_every_agent_as_running(sdk: ollama.Client) -> None:
    running = sdk.ps().models
    assert [(m.model, m.name) for m in running] == [("general", "general"), ("pirate", "pirate")]
    assert all(m.expires_at is not None and m.expires_at.year > 2100 for m in running)
    assert running[1].details is not None
    assert running[1].details.parent_model == "pirate-model"


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/x-www-form-urlencoded", id="curl-d"),
        pytest.param("application/octet-stream", id="litellm"),
        pytest.param("text/plain", id="text"),
    ],
)
def test_the_ollama_door_reads_json_whatever_the_content_type(
    client: httpx.Client, fake_ollama: FakeModel, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    chat = {"model": "general", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        client.post("/api/chat", content=msgspec.json.encode(chat), headers=headers),
        client.post("/api/generate", content=b'{"model": "general", "prompt": "hi", "stream": false}', headers=headers),
        client.post("/api/show", content=b'{"model": "general"}', headers=headers),
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert answers[0].json()["message"]["content"] == "Hello, world!"
    # The other doors keep asking for JSON.
    assert client.post("/v1/chat/completions", content=b"{}", headers=headers).status_code == 415


def test_another_sites_page_cannot_drive_the_ollama_door(client: httpx.Client, fake_ollama: FakeModel) -> None:
    """What makes reading any Content-Type safe: a form or text/plain POST from a foreign page (no CORS
    preflight) is refused by the browser guard before the body is read."""
    body = b'{"model": "general", "prompt": "hi", "stream": false}'
    headers = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    response = client.post("/api/generate", content=body, headers=headers)
    assert response.status_code == 403
    assert "error" in response.json()
    assert fake_ollama.chat_requests == []
