"""Bad input gets a clear JSON error with the right status, from one place, and never reaches upstream."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel
from piagent.exceptions import ValidationFailed
from piagent.http.formats import token_template
from piagent.http.ollama_schemas import OllamaChatResponse, OllamaReplyMessage
from piagent.http.requests import decode_body
from piagent.http.responses import ENCODER, openai_error
from piagent.schemas import ChatRequest
from tests.bodies import error_body


@pytest.mark.parametrize(
    ("content", "headers", "status", "code", "message"),
    [
        pytest.param(b"{nope", {}, 400, "invalid_json", "not valid JSON", id="syntax"),
        pytest.param(b"", {}, 400, "invalid_json", "not valid JSON", id="empty"),
        pytest.param(b'{"message": "\xff"}', {}, 400, "invalid_json", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1]", {}, 422, "validation_error", "Expected `object`, got `array`", id="not-an-object"),
        pytest.param(b"{}", {}, 422, "validation_error", "missing required field `message`", id="no-message"),
        pytest.param(b'{"message": 3}', {}, 422, "validation_error", "at `$.message`", id="message-type"),
        pytest.param(b'{"message": ""}', {}, 422, "validation_error", "at `$.message`", id="empty-message"),
        pytest.param(b'{"message": "x", "mood": 1}', {}, 422, "validation_error", "unknown field `mood`", id="unknown"),
        pytest.param(
            b'{"message": "x", "options": {"temperature": 9}}',
            {},
            422,
            "validation_error",
            "at `$.options.temperature`",
            id="temperature-range",
        ),
        pytest.param(
            b'{"message": "x", "options": {"max_tokens": 0}}',
            {},
            422,
            "validation_error",
            "at `$.options.max_tokens`",
            id="max-tokens-range",
        ),
        pytest.param(
            b'{"message": "x", "conversation_id": "../../etc"}',
            {},
            422,
            "validation_error",
            "at `$.conversation_id`",
            id="conversation-id-pattern",
        ),
        pytest.param(
            b'{"message": "x", "agent": "../x"}', {}, 422, "validation_error", "at `$.agent`", id="agent-name"
        ),
        pytest.param(
            b'{"message": "x", "agent": "nobody"}',
            {},
            404,
            "agent_not_found",
            "known agents: general, pirate",
            id="agent",
        ),
        pytest.param(
            b'{"message": "x"}',
            {"Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
            "application/json",
            id="type",
        ),
        pytest.param(
            b'{"message": "x"}',
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
            "curl",
            id="form",
        ),
    ],
)
def test_bad_requests_get_a_json_error(
    client: httpx.Client,
    fake_ollama: FakeModel,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
    message: str,
) -> None:
    response = client.post("/chat", content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert message in error["message"]
    assert fake_ollama.chat_requests == []


def test_a_body_without_content_type_is_read_as_json(client: httpx.Client) -> None:
    response = client.post("/chat", content=b'{"message": "x"}')
    assert response.status_code == 200


def test_a_json_suffix_content_type_is_accepted(client: httpx.Client) -> None:
    response = client.post("/chat", content=b'{"message": "x"}', headers={"Content-Type": "application/merge+json"})
    assert response.status_code == 200


def test_a_body_over_the_limit_is_413_declared_or_not(serve: Any) -> None:
    with serve(max_body_bytes=1024) as url, httpx.Client(base_url=url) as client:
        big = {"message": "x" * 2000}
        response = client.post("/chat", json=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Any:
            yield b'{"message": "'
            yield b"x" * 2000
            yield b'"}'

        response = client.post("/chat", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert "over 1024 bytes" in response.json()["error"]["message"]


def test_a_message_over_the_character_limit_is_422_naming_it(serve: Any) -> None:
    with serve(max_message_chars=10) as url, httpx.Client(base_url=url) as client:
        response = client.post("/chat", json={"message": "é" * 11})
    assert response.status_code == 422
    assert (
        response.json()["error"]["message"] == "the message is 11 characters; at most 10 are allowed - at `$.message`"
    )


def test_unknown_route_and_wrong_method_are_json(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert error_body(response) == {"error": {"code": "not_found", "message": "no route for GET /nowhere"}}
    response = client.get("/chat")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert client.delete("/agents").status_code == 405


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        pytest.param(b'{"message": 3}', "$.message", "Expected `str`, got `int` - at `$.message`", id="field"),
        pytest.param(
            b'{"message": "x", "options": {"temperature": 9}}',
            "$.options.temperature",
            "Expected `float` <= 2.0 - at `$.options.temperature`",
            id="nested",
        ),
        pytest.param(b"{}", None, "Object missing required field `message`", id="root"),
    ],
)
def test_validation_error_carries_its_field_path_as_data(body: bytes, path: str | None, message: str) -> None:
    decoder = msgspec.json.Decoder(ChatRequest)
    with pytest.raises(ValidationFailed) as caught:
        decode_body(decoder, body)
    assert caught.value.path == path
    assert caught.value.message == message


def test_openai_param_comes_from_the_path_not_the_message() -> None:
    error = ValidationFailed("a message that mentions - at `$.elsewhere`", "$.messages[0].content")
    assert openai_error(error).error.param == "messages[0].content"
    assert openai_error(ValidationFailed("no field - at `$.x`")).error.param is None


def test_token_template_encodes_as_the_whole_event_does() -> None:
    text = 'a "quoted"\u2028line\n'
    event = OllamaChatResponse("m", "t", OllamaReplyMessage("assistant", text), False)
    token = token_template(ENCODER.encode(OllamaChatResponse("m", "t", OllamaReplyMessage("assistant", ""), False)))
    assert token(text) == ENCODER.encode(event)
    with pytest.raises(ValueError, match="no empty"):
        token_template(b'{"text":""}')
