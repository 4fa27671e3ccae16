"""Error bodies as tests compare them: the request id checked against the response's X-Request-Id, then taken out."""

from __future__ import annotations

from typing import Any

import httpx


def without_request_id(body: Any, response: httpx.Response) -> Any:
    """`body` (an error body in any door's shape, or an in-band error event) without its `request_id`, which
    must be there and equal the response's X-Request-Id header: inside `error` when that is an object
    (piagent's and OpenAI's shapes), beside it otherwise (Ollama's `{"error": "..."}`, the stream events)."""
    holder = body["error"] if isinstance(body.get("error"), dict) else body
    assert holder.pop("request_id") == response.headers["x-request-id"]
    return body


def error_body(response: httpx.Response) -> Any:
    """The response's JSON error body without its request id (checked against the header)."""
    return without_request_id(response.json(), response)
