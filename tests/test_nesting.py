"""A body nested thousands deep is the client's error (400/422 in the door's own shape), never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from tests.bodies import error_body

DEPTH = 10_000


def deep_object() -> str:
    return '{"a":' * DEPTH + "1" + "}" * DEPTH


def deep_array() -> str:
    return "[" * DEPTH + "]" * DEPTH


def piagent_shape(error: Any) -> None:
    assert set(error) == {"error"}
    assert set(error["error"]) == {"code", "message"}


def openai_shape(error: Any) -> None:
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "invalid_request_error"


def ollama_shape(error: Any) -> None:
    assert set(error) == {"error"}
    assert isinstance(error["error"], str)


@pytest.mark.parametrize(
    ("path", "content", "shape"),
    [
        pytest.param("/chat", f'{{"message":"x","options":{deep_object()}}}', piagent_shape, id="chat-options"),
        pytest.param("/chat", f'{{"message":"x","extra":{deep_array()}}}', piagent_shape, id="chat-unknown-field"),
        pytest.param("/chat", deep_array(), piagent_shape, id="chat-whole-body"),
        pytest.param(
            "/v1/chat/completions",
            f'{{"model":"general","messages":[{{"role":"user","content":"x"}}],"response_format":{deep_object()}}}',
            openai_shape,
            id="openai-response-format",
        ),
        pytest.param(
            "/v1/chat/completions",
            f'{{"model":"general","messages":[{{"role":"user","content":{deep_array()}}}]}}',
            openai_shape,
            id="openai-content",
        ),
        pytest.param(
            "/api/chat",
            f'{{"model":"general","messages":[{{"role":"user","content":"x"}}],"options":{{"k":{deep_object()}}}}}',
            ollama_shape,
            id="ollama-options",
        ),
        pytest.param(
            "/api/chat",
            f'{{"model":"general","messages":[{{"role":"user","content":"x"}}],"format":{deep_array()}}}',
            ollama_shape,
            id="ollama-format",
        ),
        pytest.param(
            "/v1/chat/completions",
            f'{{"model":"general","messages":[{{"role":"user","content":"x"}}],'
            f'"tools":[{{"type":"function","function":{{"name":"f","parameters":{deep_object()}}}}}]}}',
            openai_shape,
            id="openai-tool-parameters",
        ),
        pytest.param(
            "/api/generate",
            f'{{"model":"general","prompt":"x","format":{deep_object()}}}',
            ollama_shape,
            id="ollama-generate-format",
        ),
    ],
)
def test_deep_nesting_is_a_client_error_in_the_doors_shape(
    serve: Any, fake_ollama: FakeModel, path: str, content: str, shape: Any
) -> None:
    with serve(max_body_bytes=1024 * 1024) as url, httpx.Client(base_url=url, timeout=10) as client:
        response = client.post(path, content=content.encode(), headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 422), response.text[:200]
        shape(error_body(response))
        assert client.get("/health").status_code == 200  # the server is fine afterwards
    assert fake_ollama.chat_requests == []
