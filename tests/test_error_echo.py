"""An error quotes at most a short prefix of what the client sent: a 5,000-character input is never echoed whole."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from piagent.exceptions import CLIP, clip

LONG = "x" * 5000
USER = [{"role": "user", "content": "hi"}]


def test_clip_keeps_a_short_prefix() -> None:
    assert clip("abc") == "'abc'"
    assert clip(LONG) == repr("x" * CLIP + "...")


@pytest.mark.parametrize(
    ("method", "path", "request_options", "status"),
    [
        pytest.param("GET", f"/conversations/{LONG}", {}, 404, id="conversation-id"),
        pytest.param("GET", f"/{LONG}", {}, 404, id="unknown-path"),
        pytest.param("PUT", f"/conversations/{LONG}", {}, 405, id="method-not-allowed-path"),
        pytest.param("GET", "/conversations", {"params": {"limit": LONG}}, 422, id="page-size"),
        pytest.param("POST", "/chat", {"content": b"{}", "headers": {"Content-Type": LONG}}, 415, id="content-type"),
        pytest.param("POST", "/chat", {"json": {"message": "hi", LONG: 1}}, 422, id="unknown-field"),
        pytest.param(
            "POST", "/v1/chat/completions", {"json": {"model": LONG, "messages": USER}}, 404, id="openai-model"
        ),
        pytest.param(
            "POST",
            "/v1/chat/completions",
            {"json": {"model": "general", "messages": [{"role": "user", "content": [{"type": LONG}]}]}},
            422,
            id="openai-content-part",
        ),
        pytest.param("POST", "/api/chat", {"json": {"model": LONG, "messages": USER}}, 404, id="ollama-model"),
        pytest.param(
            "POST", "/api/chat", {"json": {"model": "general", "messages": [{"role": LONG}]}}, 422, id="ollama-role"
        ),
        pytest.param("GET", "/agents", {"headers": {"Origin": "http://" + LONG}}, 403, id="origin"),
        pytest.param("GET", "/agents", {"headers": {"Host": LONG}}, 403, id="host"),
    ],
)
def test_errors_quote_only_a_prefix_of_client_input(
    client: httpx.Client, method: str, path: str, request_options: dict[str, Any], status: int
) -> None:
    response = client.request(method, path, **request_options)
    assert response.status_code == status
    assert "x" * (CLIP + 1) not in response.text
    assert "x" * 40 in response.text  # a prefix (of the whole path, the origin, ...) is there to recognise it by
    assert len(response.content) < 600
