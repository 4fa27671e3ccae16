"""Request decoding under fuzz: any JSON body, and any bytes, get a 2xx or a 4xx JSON error, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fakemodel import FakeModel
from tests.bodies import error_body

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
# Shaped like a chat request, so the fuzz reaches the deeper checks (options, ids, limits), not only the top.
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "message": st.text(max_size=40) | json_values,
        "agent": st.sampled_from(["general", "pirate", "nobody", "../x", ""]) | json_values,
        "conversation_id": st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True) | json_values,
        "stream": st.booleans() | json_values,
        "options": st.dictionaries(
            st.sampled_from(["temperature", "max_tokens", "top_p", "seed", "stop", "num_ctx"]),
            st.integers(-5, 2_000_000) | st.floats() | st.lists(st.text(max_size=250), max_size=3) | json_values,
            max_size=4,
        )
        | json_values,
        "extra": json_values,
    },
)


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json"
        error = error_body(response)["error"]
        assert set(error) == {"code", "message"}
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
        assert error["message"]


def test_any_json_body_gets_a_2xx_or_a_4xx_json_error(client: httpx.Client, fake_ollama: FakeModel) -> None:
    @FUZZ
    @given(body=json_values | chat_like)
    def check(body: Any) -> None:
        content = json.dumps(body).encode()  # NaN and Infinity come out as non-standard JSON: a 400
        assert_answered(client.post("/chat", content=content, headers={"Content-Type": "application/json"}))

    check()


def test_any_bytes_get_a_2xx_or_a_4xx_json_error(client: httpx.Client) -> None:
    @FUZZ
    @given(content=st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
    def check(content: bytes) -> None:
        assert_answered(client.post("/chat", content=content, headers={"Content-Type": "application/json"}))

    check()


def test_any_header_values_get_a_2xx_or_a_4xx(client: httpx.Client) -> None:
    @FUZZ
    @given(
        content_type=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        accept=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    )
    def check(content_type: str, accept: str) -> None:
        headers = {"Content-Type": content_type.strip(), "Accept": accept.strip()}
        assert_answered(client.post("/chat", content=b'{"message": "hi", "stream": true}', headers=headers))

    check()
