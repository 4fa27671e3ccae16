"""Every error a client can provoke: a clean JSON body (or in-band event), never a traceback, path, URL or key."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import msgspec

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from tests.bodies import error_body
from tests.conftest import MakeSettings
from tests.servers import serve_app
from tests.test_disconnects import send_raw_request

KEY = "alpha-0123456789-abcdefghij"
OTHER_KEY = "bravo-0123456789-abcdefghij"
WRONG_KEY = "wrong-0123456789-abcdefghij"
# An upstream error text full of what must not reach a client.
LEAKY = "open /root/.ollama/models/blobs/sha256-1f2e: no such file; runner at http://127.0.0.1:39245/completion"
FORBIDDEN = re.compile(
    r"Traceback|File \"|\.py\b|/root|/srv|/home|127\.0\.0\.1|localhost|https?://|:11434|"
    + "|".join(re.escape(k) for k in (KEY, OTHER_KEY, WRONG_KEY))
)


class BrokenTransport(httpx.AsyncBaseTransport):
    """An upstream transport with a bug: its exception text is full of secrets."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"bug in /srv/piagent/transport.py talking to {request.url} with {KEY}")


def assert_clean(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert FORBIDDEN.search(response.text) is None, response.text
    if status == 200:  # a stream that ended in-band
        events = [msgspec.json.decode(line) for line in response.text.splitlines()]
        assert events[-1]["event"] == "error"
        assert events[-1]["code"] == code
        assert events[-1]["request_id"] == response.headers["x-request-id"]
        return
    assert response.headers["content-type"] == "application/json"
    body = error_body(response)
    assert body == {"error": {"code": code, "message": body["error"]["message"]}}
    assert body["error"]["message"]


def test_every_error_path_has_a_clean_body(
    make_settings: MakeSettings, fake_ollama: FakeModel, serve: Any, serve_full: Any
) -> None:
    key = {"Authorization": f"Bearer {KEY}"}
    ndjson = {**key, "Accept": "application/x-ndjson"}
    limits = {
        "api_keys": (KEY, OTHER_KEY),
        "max_body_bytes": 1024,
        "max_message_chars": 100,
        "max_tokens": 50,
        "first_token_timeout": 0.3,
        "read_timeout": 0.3,
        "max_line_bytes": 1024,
        "max_queue": 0,
    }
    with serve_full(**limits) as served, httpx.Client(base_url=served.url) as client:

        def post(body: Any = None, headers: dict[str, str] = key, **kwargs: Any) -> httpx.Response:
            return client.post("/chat", json=body, headers=headers, **kwargs)

        assert_clean(post({"message": "hi"}, headers={}), 401, "unauthorized")
        assert_clean(post({"message": "hi"}, headers={"Authorization": f"Bearer {WRONG_KEY}"}), 401, "unauthorized")
        assert_clean(client.get("/nowhere", headers=key), 404, "not_found")
        assert_clean(client.get("/chat", headers=key), 405, "method_not_allowed")
        assert_clean(post(content=b"{nope", headers={**key, "Content-Type": "application/json"}), 400, "invalid_json")
        assert_clean(post(content=b'{"message":"\xff"}', headers=key), 400, "invalid_json")
        assert_clean(post({"message": "x" * 2000}), 413, "payload_too_large")
        assert_clean(post(content=b"hi", headers={**key, "Content-Type": "text/plain"}), 415, "unsupported_media_type")
        assert_clean(post({"message": 3}), 422, "validation_error")
        assert_clean(post({"message": "x" * 101}), 422, "validation_error")
        assert_clean(post({"message": "hi", "options": {"max_tokens": 51}}), 422, "validation_error")
        assert_clean(post({"message": "hi", "agent": "nobody"}), 404, "agent_not_found")
        mine = post({"message": "hi"}).json()["conversation_id"]
        theirs = {"Authorization": f"Bearer {OTHER_KEY}"}
        assert_clean(client.get(f"/conversations/{mine}", headers=theirs), 404, "conversation_not_found")
        for stream in (False, True):
            for script, status, code in [
                (Script(status=500, error=LEAKY), 502, "upstream_error"),
                (Script(status=503, error=LEAKY), 503, "upstream_unavailable"),
                (Script(status=502, raw_body=[b"<html><a href='http://127.0.0.1:11434/x'>bad</a></html>"]), 502, ""),
                (Script(raw_body=[b"not json\n"]), 502, "upstream_error"),
                (Script(raw_body=[b'{"message":{"content":"\xff"}}\n']), 502, "upstream_error"),
                (Script(raw_body=[b"x" * 2000 + b"\n"]), 502, "upstream_error"),
                (Script(reset_after=-1), 502, "upstream_error"),
                (Script(stall_before_headers=True), 504, "upstream_timeout"),
            ]:
                fake_ollama.script = script
                assert_clean(post({"message": "hi", "stream": stream}), status, code or "upstream_error")
        for script, code in [
            (Script(tokens=["a", "b"], error_after=1, error=LEAKY), "upstream_error"),
            (Script(tokens=["a", "b"], stall_after=1), "upstream_timeout"),
            (Script(raw_body=[b'{"message":{"content":"a"}}\n', b"{nope\n"]), "upstream_error"),
        ]:
            fake_ollama.script = script
            assert_clean(post({"message": "hi", "stream": True}, headers=ndjson), 200, code)

        fake_ollama.script = Script(stall_after=0)
        holder = send_raw_request(served.url, {"message": "hold the only slot", "stream": True}, key)
        wait_until(lambda: served.runtime.chat.limiter.active == 1)
        assert_clean(post({"message": "hi"}), 503, "busy")
        holder.close()
        wait_until(lambda: served.runtime.chat.limiter.active == 0)

        async def halt() -> None:
            limiter = served.runtime.chat.limiter
            assert limiter is not None
            limiter.halt()

        served.call(halt)
        assert_clean(post({"message": "hi"}), 503, "shutting_down")

    with serve(ollama_url="http://127.0.0.1:9") as url:
        assert_clean(httpx.post(f"{url}/chat", json={"message": "hi"}), 503, "upstream_unavailable")

    broken = create_app(make_settings(rate_limit=2, api_keys=(KEY,)), transport=BrokenTransport())
    with serve_app(broken) as served, httpx.Client(base_url=served.url, headers=key) as client:
        assert_clean(client.post("/chat", json={"message": "hi"}), 500, "internal_error")
        assert_clean(client.post("/chat", json={"message": "hi", "stream": True}), 500, "internal_error")
        assert_clean(client.post("/chat", json={"message": "hi"}), 429, "rate_limited")


def wait_until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
