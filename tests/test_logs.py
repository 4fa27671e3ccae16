"""Request ids (X-Request-Id in, echoed out) and JSON logs (PIAGENT_LOG_FORMAT=json) with one access line each."""

from __future__ import annotations

import logging
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import create_app
from piagent.logs import JsonFormatter
from tests.conftest import MakeSettings
from tests.servers import free_port, serve_app, start_piagent, wait_until_serving
from tests.test_cli import base_env
from tests.test_error_bodies import BrokenTransport

KEY = "alpha-0123456789-abcdefghij"
GENERATED = re.compile(r"[0-9a-f]{16}")


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("4bf92f35-77b3-4da6-a3ce-929d0e0e4736", True, id="uuid"),
        pytest.param("a" * 128, True, id="128-chars"),
        pytest.param("a" * 129, False, id="too-long"),
        pytest.param("abc def", False, id="space"),
        pytest.param('x","level":"error', False, id="json-forgery"),
        pytest.param("", False, id="empty"),
    ],
)
def test_a_valid_request_id_is_echoed_and_any_other_replaced(served: Any, sent: str, kept: bool) -> None:
    with httpx.Client(base_url=served.url) as client:
        for response in (
            client.get("/health", headers={"X-Request-Id": sent}),
            client.get("/nowhere", headers={"X-Request-Id": sent}),  # an error carries it too
            client.post("/chat", json={"message": 3}, headers={"X-Request-Id": sent}),
        ):
            echoed = response.headers["x-request-id"]
            assert echoed == sent if kept else GENERATED.fullmatch(echoed)


def test_without_a_request_id_each_request_gets_its_own(client: httpx.Client) -> None:
    ids = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(GENERATED.fullmatch(request_id) for request_id in ids)


def test_the_json_formatter_writes_one_object_per_line_with_the_access_fields() -> None:
    record = logging.LogRecord("piagent.access", logging.INFO, __file__, 1, "%s %s %d", ("GET", "/x", 200), None)
    record.request_id, record.status, record.owner = "abc", 200, None
    line = JsonFormatter().format(record)
    assert "\n" not in line
    body = msgspec.json.decode(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body.pop("time"))
    assert body == {
        "level": "info",
        "logger": "piagent.access",
        "message": "GET /x 200",
        "request_id": "abc",
        "status": 200,
    }
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("piagent", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in msgspec.json.decode(JsonFormatter().format(failed))["exc_info"]


def test_json_logs_give_every_line_as_json_and_an_access_line_per_request_without_content(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        prompts_dir,
        PIAGENT_PORT=str(port),
        PIAGENT_OLLAMA_URL=fake_ollama.url,
        PIAGENT_API_KEYS=KEY,
        PIAGENT_LOG_FORMAT="json",
    )
    process = start_piagent(env, tmp_path)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": "trace-42"}
        reply = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "secret words"}, headers=headers)
        assert reply.json()["reply"] == "Hello, world!"
        assert reply.headers["x-request-id"] == "trace-42"
        refused = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "x"})
        assert refused.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    lines = [msgspec.json.decode(line) for line in output.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    access = [line for line in lines if line["logger"] == "piagent.access"]
    chat = next(line for line in access if line.get("request_id") == "trace-42")
    assert (chat["method"], chat["path"], chat["status"]) == ("POST", "/chat", 200)
    assert chat["duration_ms"] >= 0
    assert chat["owner"]
    assert KEY not in chat["owner"]
    unauthorized = next(line for line in access if line["status"] == 401)
    assert GENERATED.fullmatch(unauthorized["request_id"])
    assert "owner" not in unauthorized
    assert "secret words" not in output
    assert "Hello, world!" not in output
    assert KEY not in output


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_warning_logged_while_serving_a_request_carries_its_id(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path, log_format: str
) -> None:
    port = free_port()
    env = base_env(
        prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=fake_ollama.url, PIAGENT_LOG_FORMAT=log_format
    )
    process = start_piagent(env, tmp_path)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        fake_ollama.script = Script(tokens=["a", "b", "c"], error_after=2, error="out of memory")
        headers = {"X-Request-Id": "trace-7", "Accept": "application/x-ndjson"}
        reply = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "hi", "stream": True}, headers=headers)
        assert msgspec.json.decode(reply.text.splitlines()[-1])["request_id"] == "trace-7"
        conversation = reply.headers["x-conversation-id"]
        fake_ollama.script = Script(tokens=["fine"])
        assert httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "hi"}).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    warning = f"reply in conversation {conversation} ended early: ollama: out of memory"
    if log_format == "json":
        lines = [msgspec.json.decode(line) for line in output.splitlines() if line.strip()]
        logged = [line for line in lines if line["message"] == warning]
        assert [(line["level"], line["logger"], line.get("request_id")) for line in logged] == [
            ("warning", "piagent.http.streaming", "trace-7")
        ]
        # Lines logged outside any request (start-up, shutdown) carry no id.
        assert not any("request_id" in line for line in lines if line["logger"] == "uvicorn.error")
    else:
        logged = [line for line in output.splitlines() if warning in line]
        assert logged == [f"WARNING:  {warning} [request_id=trace-7]"]
        accesses = [line for line in output.splitlines() if '"POST /chat HTTP/1.1" 200' in line]
        assert len(accesses) == 2
        assert accesses[0].endswith(" [request_id=trace-7]")
        assert GENERATED.fullmatch(accesses[1].rpartition("[request_id=")[2].rstrip("]"))
        assert "Application startup complete." in output
        assert not any("request_id" in line for line in output.splitlines() if "startup complete" in line)


def test_the_access_line_of_an_unexpected_failure_says_500(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # Starlette's outermost middleware sends the 500 after the access line is written: the line says what it sends.
    app = create_app(make_settings(access_log=True, log_format="json"), transport=BrokenTransport())
    with caplog.at_level(logging.INFO, logger="piagent.access"), serve_app(app) as served:
        reply = httpx.post(f"{served.url}/chat", json={"message": "hi"}, headers={"X-Request-Id": "trace-500"})
    assert reply.status_code == 500
    lines = [record for record in caplog.records if getattr(record, "request_id", None) == "trace-500"]
    assert [(record.name, getattr(record, "status", None)) for record in lines] == [("piagent.access", 500)]
