"""Tests for the fake model server (both protocols) that the streaming tests and the benchmarks rely on."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bench.fakemodel import FakeModel, Script, ToolCall, json_script, reply_text

CHAT = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def fake() -> Iterator[FakeModel]:
    """A started fake, stopped after the test."""
    with FakeModel() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    """A sync httpx client with short timeouts (plain HTTP, so no CA bundle is loaded: that costs ~50 ms)."""
    with httpx.Client(timeout=2.0, verify=False) as c:
        yield c


def _chat(**extra: Any) -> dict[str, Any]:
    """Return a chat request body with ``extra`` fields merged in."""
    return {**CHAT, **extra}


def _lines(data: bytes) -> list[dict[str, Any]]:
    """Decode an NDJSON body."""
    return [json.loads(line) for line in data.split(b"\n") if line]


def test_stream_writes_each_line_as_its_own_chunk_with_the_delay(fake: FakeModel, http_client: httpx.Client) -> None:
    """Token lines arrive one by one, spaced by ``delay``, then the done line."""
    fake.script = Script(tokens=["a", "b", "c"], delay=0.05)
    arrivals: list[tuple[float, bytes]] = []
    with http_client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["transfer-encoding"] == "chunked"
        arrivals.extend((time.monotonic(), chunk) for chunk in response.iter_raw())
    chunks = [chunk for _, chunk in arrivals]
    assert all(chunk.endswith(b"\n") and chunk.count(b"\n") == 1 for chunk in chunks)
    lines = [json.loads(chunk) for chunk in chunks]
    assert [line["message"]["content"] for line in lines] == ["a", "b", "c", ""]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert all(line["model"] == CHAT["model"] and line["created_at"].endswith("Z") for line in lines)
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(arrivals)]
    assert all(0.03 < gap < 0.5 for gap in gaps), gaps


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        pytest.param(Script(), {"eval_count": 4, "prompt_eval_count": 7, "done_reason": "stop"}, id="defaults"),
        pytest.param(
            Script(tokens=["x"], eval_count=9, prompt_eval_count=3, done_reason="length"),
            {"eval_count": 9, "prompt_eval_count": 3, "done_reason": "length"},
            id="overridden",
        ),
    ],
)
def test_final_line_carries_done_fields(
    fake: FakeModel, http_client: httpx.Client, script: Script, expected: dict[str, Any]
) -> None:
    """The last streamed line is the done object with Ollama's counters."""
    fake.script = script
    final = _lines(http_client.post(f"{fake.url}/api/chat", json=_chat()).content)[-1]
    assert final["done"] is True
    assert final["message"] == {"role": "assistant", "content": ""}
    assert {key: final[key] for key in expected} == expected
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int)


def test_stream_false_returns_one_json_object(fake: FakeModel, http_client: httpx.Client) -> None:
    """``"stream": false`` gets the whole content in one application/json body."""
    response = http_client.post(f"{fake.url}/api/chat", json=_chat(stream=False))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "Hello, world!"}
    assert body["done"] is True
    assert body["eval_count"] == 4


@pytest.mark.parametrize("stream", [pytest.param(True, id="stream"), pytest.param(False, id="whole")])
@pytest.mark.parametrize(
    ("status", "error"),
    [pytest.param(404, "model 'x' not found", id="404"), pytest.param(500, "boom", id="500")],
)
def test_status_error_has_json_error_body(
    fake: FakeModel, http_client: httpx.Client, stream: bool, status: int, error: str
) -> None:
    """A scripted status answers with ``{"error": ...}`` before any body."""
    fake.script = Script(status=status, error=error)
    response = http_client.post(f"{fake.url}/api/chat", json=_chat(stream=stream))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": error}


@pytest.mark.parametrize("after", [pytest.param(0, id="first"), pytest.param(2, id="middle")])
def test_error_after_writes_error_line_and_ends_body(fake: FakeModel, http_client: httpx.Client, after: int) -> None:
    """After N token lines an in-band error line ends a well-formed body; the connection stays usable."""
    fake.script = Script(error_after=after, error="oom")
    response = http_client.post(f"{fake.url}/api/chat", json=_chat())
    assert response.status_code == 200
    lines = _lines(response.content)
    assert [line["message"]["content"] for line in lines[:-1]] == Script().tokens[:after]
    assert lines[-1] == {"error": "oom"}
    assert http_client.get(f"{fake.url}/api/version").status_code == 200
    assert fake.connection_count == 1


@pytest.mark.parametrize(
    ("script", "lines_before_leaving"),
    [
        pytest.param(Script(stall_after=0), 0, id="stall-after-headers"),
        pytest.param(Script(stall_after=2), 2, id="stall-mid-stream"),
        pytest.param(Script(delay=5.0), 1, id="slow-stream"),
    ],
)
def test_client_leaving_a_stalled_stream_is_recorded(
    fake: FakeModel, http_client: httpx.Client, script: Script, lines_before_leaving: int
) -> None:
    """The fake notices the client closing a stalled or slow stream within 100 ms."""
    fake.script = script
    with http_client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response:
        lines = response.iter_lines()
        for _ in range(lines_before_leaving):
            next(lines)
        left = time.monotonic()
    closed = fake.wait_for_client_close(1.0, after=left)
    assert closed is not None
    assert closed - left < 0.1
    assert fake.wait_for_open_connections(0, 1.0)


def test_client_giving_up_before_headers_is_recorded(fake: FakeModel, http_client: httpx.Client) -> None:
    """With ``stall_before_headers`` the client times out and its close is recorded."""
    fake.script = Script(stall_before_headers=True)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http_client.post(f"{fake.url}/api/chat", json=_chat(), timeout=0.2)
    gave_up = time.monotonic()
    closed = fake.wait_for_client_close(1.0, after=started)
    assert closed is not None
    assert abs(closed - gave_up) < 0.1


def test_wait_for_client_close_without_after_waits_for_a_new_close(fake: FakeModel, http_client: httpx.Client) -> None:
    """Without ``after`` only a close recorded after the call counts."""
    http_client.get(f"{fake.url}/api/version")
    http_client.close()
    assert fake.wait_for_client_close(1.0, after=0.0) is not None
    assert fake.wait_for_client_close(0.05) is None


@pytest.mark.parametrize(
    ("reset_after", "delay"),
    [
        pytest.param(-1, 0.0, id="before-status-line"),
        pytest.param(0, 0.0, id="after-headers"),
        pytest.param(2, 0.02, id="mid-stream"),
    ],
)
def test_reset_aborts_the_connection(
    fake: FakeModel, http_client: httpx.Client, reset_after: int, delay: float
) -> None:
    """``reset_after`` tears the connection down with an RST, which is not counted as a client close."""
    fake.script = Script(reset_after=reset_after, delay=delay)
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        http_client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response,
    ):
        for _ in response.iter_raw():
            pass
    assert fake.wait_for_open_connections(0, 1.0)
    assert fake.closed_at == []


RAW = [b'{"model":"m","mess', b'age":{"content":"\xff\xfe"}}\n{"a"', b":1}\n", b"not json\n", b"x" * 100_000 + b"\n"]


def test_raw_body_passes_bytes_through_exactly(fake: FakeModel, http_client: httpx.Client) -> None:
    """``raw_body`` chunks reach the client unchanged, with their odd split points."""
    fake.script = Script(raw_body=RAW[:4], delay=0.03)
    with http_client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert list(response.iter_raw()) == RAW[:4]


@pytest.mark.parametrize("stream", [pytest.param(True, id="stream"), pytest.param(False, id="whole")])
def test_raw_body_with_long_line(fake: FakeModel, http_client: httpx.Client, stream: bool) -> None:
    """A long raw line and invalid UTF-8 are delivered byte for byte in both modes."""
    fake.script = Script(raw_body=RAW)
    assert http_client.post(f"{fake.url}/api/chat", json=_chat(stream=stream)).content == b"".join(RAW)


def test_tags_lists_the_configured_models(fake: FakeModel, http_client: httpx.Client) -> None:
    """``/api/tags`` is built from ``fake.models``."""
    fake.models = ["qwen2.5:0.5b", "llama3.2:1b"]
    models = http_client.get(f"{fake.url}/api/tags").json()["models"]
    assert [m["name"] for m in models] == fake.models
    assert models[0] == {
        "name": "qwen2.5:0.5b",
        "model": "qwen2.5:0.5b",
        "modified_at": "2026-11-01T00:00:00Z",
        "size": 397821319,
        "digest": "abc",
        "details": {"format": "gguf", "family": "qwen2", "parameter_size": "494M", "quantization_level": "Q4_K_M"},
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        pytest.param("GET", "/", 200, b"Ollama is running", id="root"),
        pytest.param("GET", "/api/version", 200, b'{"version":"0.12.0"}', id="version"),
        pytest.param("GET", "/api/ps", 200, b'{"models":[]}', id="ps"),
        pytest.param("GET", "/api/nope", 404, b'{"error":"not found"}', id="unknown-path"),
        pytest.param("GET", "/api/chat", 405, b'{"error":"method not allowed"}', id="chat-needs-post"),
    ],
)
def test_simple_endpoints(
    fake: FakeModel, http_client: httpx.Client, method: str, path: str, status: int, body: bytes
) -> None:
    """The small endpoints answer like Ollama."""
    response = http_client.request(method, f"{fake.url}{path}")
    assert (response.status_code, response.content) == (status, body)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        pytest.param({"messages": []}, 400, "model is required", id="no-model"),
        pytest.param([1, 2], 400, "invalid request body", id="not-an-object"),
    ],
)
def test_invalid_chat_request_is_rejected(
    fake: FakeModel, http_client: httpx.Client, body: Any, status: int, error: str
) -> None:
    """A chat request without a model gets a 400 with an error body."""
    response = http_client.post(f"{fake.url}/api/chat", json=body)
    assert (response.status_code, response.json()) == (status, {"error": error})


def test_strict_models_answers_404_for_unknown_model(fake: FakeModel, http_client: httpx.Client) -> None:
    """With ``strict_models`` a model missing from ``models`` is not found, as in Ollama."""
    fake.strict_models = True
    response = http_client.post(f"{fake.url}/api/chat", json=_chat(model="x"))
    assert (response.status_code, response.json()) == (404, {"error": "model 'x' not found"})


def test_per_model_script_overrides_default(fake: FakeModel, http_client: httpx.Client) -> None:
    """``scripts[model]`` wins over ``script`` for that model only."""
    fake.scripts["other"] = Script(tokens=["x", "y"])
    other = http_client.post(f"{fake.url}/api/chat", json=_chat(model="other", stream=False)).json()
    default = http_client.post(f"{fake.url}/api/chat", json=_chat(stream=False)).json()
    assert other["message"]["content"] == "xy"
    assert default["message"]["content"] == "Hello, world!"


def test_keep_alive_serves_several_requests_on_one_connection(fake: FakeModel, http_client: httpx.Client) -> None:
    """Sequential requests reuse one TCP connection; closing the client is recorded."""
    assert http_client.get(f"{fake.url}/api/version").status_code == 200
    assert len(_lines(http_client.post(f"{fake.url}/api/chat", json=_chat()).content)) == 5
    assert http_client.post(f"{fake.url}/api/chat", json=_chat(stream=False)).status_code == 200
    assert fake.open_connections == 1
    assert fake.connection_count == 1
    assert {r.connection for r in fake.requests} == {1}
    left = time.monotonic()
    http_client.close()
    assert fake.wait_for_client_close(1.0, after=left) is not None
    assert fake.wait_for_open_connections(0, 1.0)


@pytest.mark.parametrize("path", [pytest.param("/api/version", id="plain"), pytest.param("/api/chat", id="chat")])
def test_connection_close_is_honoured(fake: FakeModel, http_client: httpx.Client, path: str) -> None:
    """A request with ``Connection: close`` gets the same header and the fake closes the socket."""
    response = http_client.request(
        "POST" if path == "/api/chat" else "GET",
        f"{fake.url}{path}",
        json=_chat() if path == "/api/chat" else None,
        headers={"Connection": "close"},
    )
    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    assert fake.wait_for_open_connections(0, 1.0)


def test_requests_are_recorded_with_their_json(fake: FakeModel, http_client: httpx.Client) -> None:
    """Every request is recorded with method, path, lower-cased headers, JSON and time."""
    before = time.monotonic()
    http_client.get(f"{fake.url}/api/tags?x=1", headers={"X-Trace": "t1"})
    http_client.post(f"{fake.url}/api/chat", json=_chat(stream=False, options={"temperature": 0}))
    after = time.monotonic()
    assert fake.wait_for_requests(2, 1.0)
    tags, chat = fake.requests
    assert (tags.method, tags.path, tags.json, tags.headers["x-trace"]) == ("GET", "/api/tags", None, "t1")
    assert (chat.method, chat.path, chat.headers["content-type"]) == ("POST", "/api/chat", "application/json")
    assert fake.chat_requests == [_chat(stream=False, options={"temperature": 0})]
    assert before <= tags.received_at <= chat.received_at <= after
    assert not fake.wait_for_requests(3, 0.01)


def test_chunked_request_body_is_accepted(fake: FakeModel, http_client: httpx.Client) -> None:
    """A request body sent with ``Transfer-Encoding: chunked`` is de-chunked and parsed."""
    parts = [b'{"model":"m","mess', b'ages":[],"stream"', b":false}"]
    response = http_client.post(f"{fake.url}/api/chat", content=iter(parts))
    assert response.status_code == 200
    assert fake.requests[-1].headers["transfer-encoding"] == "chunked"
    assert fake.chat_requests == [{"model": "m", "messages": [], "stream": False}]


def test_header_and_first_delays_are_applied(fake: FakeModel, http_client: httpx.Client) -> None:
    """``header_delay`` holds back the status line, ``first_delay`` the first token line."""
    fake.script = Script(header_delay=0.1, first_delay=0.1, tokens=["a"])
    started = time.monotonic()
    with http_client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response:
        got_headers = time.monotonic()
        first = next(response.iter_raw())
        got_first = time.monotonic()
    assert json.loads(first)["message"]["content"] == "a"
    assert 0.08 < got_headers - started < 0.5
    assert 0.08 < got_first - got_headers < 0.5


def test_stop_does_not_hang_on_open_connections(caplog: pytest.LogCaptureFixture) -> None:
    """``stop`` aborts idle, stalled and slow connections promptly, logs nothing and leaves no thread behind."""
    fake = FakeModel().start()
    fake.scripts = {"stalled": Script(stall_before_headers=True), "slow": Script(delay=5.0)}
    port = int(fake.url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    for sock, model in zip(socks[1:], fake.scripts, strict=True):
        body = json.dumps(_chat(model=model)).encode()
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    assert fake.wait_for_requests(2, 1.0)
    assert fake.wait_for_open_connections(3, 1.0)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    for sock in socks:
        with sock:
            sock.settimeout(1.0)
            while sock.recv(65536):  # whatever was sent, then EOF
                pass
    assert not [t for t in threading.enumerate() if t.name.startswith("fake-model")]
    assert fake.closed_at == []
    assert fake.errors == []
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    fake.stop()


def test_usable_from_inside_a_running_event_loop() -> None:
    """The fake starts, serves and stops from async code too."""

    async def main() -> list[str]:
        with FakeModel() as fake:
            fake.script = Script(tokens=["a", "b"], delay=0.01)
            async with (
                httpx.AsyncClient(verify=False) as c,
                c.stream("POST", f"{fake.url}/api/chat", json=_chat()) as response,
            ):
                return [json.loads(line)["message"]["content"] async for line in response.aiter_lines()]

    assert anyio.run(main) == ["a", "b", ""]


# ---------------------------------------------------------------------------------------------- OpenAI protocol

OPENAI = "/v1/chat/completions"


def _events(data: bytes) -> list[Any]:
    """The data fields of an SSE body, decoded unless [DONE]."""
    found = [line[6:] for line in data.split(b"\n") if line.startswith(b"data: ")]
    return [item if item == b"[DONE]" else json.loads(item) for item in found]


@pytest.mark.parametrize("usage", [pytest.param(True, id="include-usage"), pytest.param(False, id="no-usage")])
def test_openai_stream_sends_role_tokens_finish_usage_and_done(
    fake: FakeModel, http_client: httpx.Client, usage: bool
) -> None:
    """``stream: true`` gets SSE: the role chunk, one chunk per token, the finish chunk, usage if asked, [DONE]."""
    fake.script = Script(tokens=["a", "b"], prompt_eval_count=3)
    body = _chat(stream=True, stream_options={"include_usage": usage})
    response = http_client.post(f"{fake.url}{OPENAI}", json=body)
    assert response.headers["content-type"] == "text/event-stream"
    events = _events(response.content)
    assert events[-1] == b"[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:4]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "a"}, {"content": "b"}, {}]
    assert events[3]["choices"][0]["finish_reason"] == "stop"
    usage_events = [e for e in events[4:-1] if e["choices"] == []]
    expected = [{"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}] if usage else []
    assert [e["usage"] for e in usage_events] == expected


def test_openai_without_stream_gets_one_completion_and_errors_in_its_shape(
    fake: FakeModel, http_client: httpx.Client
) -> None:
    """Without ``stream: true`` one chat.completion object; a scripted status answers OpenAI's error object."""
    completion = http_client.post(f"{fake.url}{OPENAI}", json=_chat()).json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world!"}
    fake.script = Script(status=503, error="busy")
    failed = http_client.post(f"{fake.url}{OPENAI}", json=_chat(stream=True))
    assert failed.status_code == 503
    assert failed.json()["error"]["message"] == "busy"


def test_openai_mid_stream_error_is_an_error_event_without_done(fake: FakeModel, http_client: httpx.Client) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=1, error="KV cache full")
    events = _events(http_client.post(f"{fake.url}{OPENAI}", json=_chat(stream=True)).content)
    assert events[-1]["error"]["message"] == "KV cache full"
    assert b"[DONE]" not in events


WEATHER = ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_w")


def test_openai_streams_tool_calls_in_pieces_by_index(fake: FakeModel, http_client: httpx.Client) -> None:
    """Per call: a piece with index, id and name and empty arguments, then argument fragments; finish tool_calls."""
    fake.script = Script(tokens=[], tool_calls=[WEATHER, ToolCall("clock", {}, pieces=1)])
    events = _events(http_client.post(f"{fake.url}{OPENAI}", json=_chat(stream=True)).content)
    pieces = [piece for e in events[:-1] for piece in e["choices"][0]["delta"].get("tool_calls", [])]
    assert pieces[0] == {
        "index": 0,
        "id": "call_w",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    first = [p["function"]["arguments"] for p in pieces[1:] if p["index"] == 0]
    assert len(first) == 3
    assert json.loads("".join(first)) == WEATHER.arguments
    second = [p for p in pieces if p["index"] == 1]
    assert second[0]["function"] == {"name": "clock", "arguments": ""}
    assert second[0]["id"] == "call_1"
    assert [p["function"]["arguments"] for p in second[1:]] == ["{}"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_tool_calls_without_stream(fake: FakeModel, http_client: httpx.Client) -> None:
    fake.script = Script(tokens=[], tool_calls=[WEATHER])
    choice = http_client.post(f"{fake.url}{OPENAI}", json=_chat()).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_w", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == WEATHER.arguments


@pytest.mark.parametrize("stream", [pytest.param(True, id="stream"), pytest.param(False, id="whole")])
def test_ollama_tool_calls_arrive_whole_with_object_arguments(
    fake: FakeModel, http_client: httpx.Client, stream: bool
) -> None:
    """Ollama sends every call whole in one chunk, arguments as an object; the reply still ends with done."""
    fake.script = Script(tokens=["ok"], tool_calls=[WEATHER])
    response = http_client.post(f"{fake.url}/api/chat", json=_chat(stream=stream))
    lines = _lines(response.content) if stream else [response.json()]
    with_calls = [line for line in lines if "tool_calls" in line["message"]]
    assert len(with_calls) == 1
    expected = [{"function": {"name": "get_weather", "arguments": WEATHER.arguments}}]
    assert with_calls[0]["message"]["tool_calls"] == expected
    assert lines[-1]["done"] is True


@pytest.mark.parametrize("path", [pytest.param("/api/chat", id="ollama"), pytest.param(OPENAI, id="openai")])
def test_json_script_streams_json_text(fake: FakeModel, http_client: httpx.Client, path: str) -> None:
    """Structured output: the content pieces join to the JSON text of the value."""
    value = {"name": "Ada", "tags": ["x", "é"], "n": 3}
    fake.script = json_script(value, pieces=5)
    response = http_client.post(f"{fake.url}{path}", json=_chat(stream=True))
    if path == OPENAI:
        text = "".join(
            e["choices"][0]["delta"].get("content", "") for e in _events(response.content)[:-1] if e["choices"]
        )
    else:
        text = "".join(line["message"]["content"] for line in _lines(response.content))
    assert len(fake.script.tokens) == 5
    assert json.loads(text) == value


# ---------------------------------------------------------------------------------------------- the rest of Ollama


@pytest.mark.parametrize("stream", [pytest.param(True, id="stream"), pytest.param(False, id="whole")])
def test_generate_answers_with_response_fields(fake: FakeModel, http_client: httpx.Client, stream: bool) -> None:
    response = http_client.post(f"{fake.url}/api/generate", json={"model": "m", "prompt": "hi", "stream": stream})
    lines = _lines(response.content) if stream else [response.json()]
    assert "".join(line["response"] for line in lines) == "Hello, world!"
    assert lines[-1]["done"] is True
    assert lines[-1]["context"] == [1, 2, 3]


def test_show_ps_and_models_listings(fake: FakeModel, http_client: httpx.Client) -> None:
    fake.loaded = ["qwen2.5:0.5b"]
    shown = http_client.post(f"{fake.url}/api/show", json={"model": "qwen2.5:0.5b"}).json()
    assert shown["capabilities"] == ["completion", "tools"]
    assert shown["details"]["family"] == "qwen2"
    assert [m["name"] for m in http_client.get(f"{fake.url}/api/ps").json()["models"]] == ["qwen2.5:0.5b"]
    listed = http_client.get(f"{fake.url}/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["qwen2.5:0.5b"]
    fake.strict_models = True
    assert http_client.post(f"{fake.url}/api/show", json={"model": "nope"}).status_code == 404


def test_queue_then_choose_then_per_model_script(fake: FakeModel, http_client: httpx.Client) -> None:
    """``choose`` (when it answers) wins over ``queue``, which is used up in order before ``scripts``/``script``."""
    fake.queue = [Script(tokens=["q1"]), Script(tokens=["q2"])]
    fake.choose = lambda request: Script(tokens=["chosen"]) if request.json["messages"] == [] else None

    def text(**extra: Any) -> str:
        return str(
            http_client.post(f"{fake.url}/api/chat", json=_chat(stream=False, **extra)).json()["message"]["content"]
        )

    assert [text(), text(messages=[]), text(), text()] == ["q1", "chosen", "q2", "Hello, world!"]


def test_api_key_is_required_when_set(fake: FakeModel, http_client: httpx.Client) -> None:
    fake.api_key = "sk-test"
    assert http_client.get(f"{fake.url}/v1/models").status_code == 401
    headers = {"Authorization": "Bearer sk-test"}
    assert http_client.get(f"{fake.url}/v1/models", headers=headers).status_code == 200


# ---------------------------------------------------------------------------------------------- more faults


def test_gzip_body_stays_incremental(fake: FakeModel) -> None:
    """With ``gzip`` each line is flushed through the compressor: the client decodes it before the next arrives."""
    fake.script = Script(tokens=["a", "b"], delay=0.05, gzip=True)
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        body = json.dumps(_chat()).encode()
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        head = sock.recv(65536)
        assert b"Content-Encoding: gzip" in head
    with httpx.Client(timeout=2.0) as client, client.stream("POST", f"{fake.url}/api/chat", json=_chat()) as reply:
        lines = [json.loads(line) for line in reply.iter_lines()]
    assert [line["message"]["content"] for line in lines] == ["a", "b", ""]


def test_hang_after_done_never_ends_the_body(fake: FakeModel, http_client: httpx.Client) -> None:
    """The done line arrives, then nothing, and the body is never terminated."""
    fake.script = Script(tokens=["a"], hang_after_done=True, after_done=b"\n\n")
    with http_client.stream("POST", f"{fake.url}/api/chat", json=_chat(), timeout=0.3) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["done"] is False
        assert json.loads(next(lines))["done"] is True
        with pytest.raises(httpx.ReadTimeout):
            list(lines)


@pytest.mark.parametrize("close_after", [pytest.param(-1, id="before-status-line"), pytest.param(1, id="mid-stream")])
def test_close_after_ends_the_connection_cleanly(fake: FakeModel, http_client: httpx.Client, close_after: int) -> None:
    fake.script = Script(close_after=close_after)
    with pytest.raises(httpx.RemoteProtocolError):
        http_client.post(f"{fake.url}/api/chat", json=_chat())
    assert fake.wait_for_open_connections(0, 1.0)
    assert fake.closed_at == []


def test_extra_headers_are_sent(fake: FakeModel, http_client: httpx.Client) -> None:
    fake.script = Script(headers={"X-Huge": "h" * 60_000})
    assert http_client.post(f"{fake.url}/api/chat", json=_chat()).headers["x-huge"] == "h" * 60_000


# ---------------------------------------------------------------------------------------------- as a benchmark process


def test_runs_as_a_process_with_the_benchmark_vocabulary() -> None:
    """``python bench/fake_model.py --port 0`` serves the vocabulary; /_bench/config, stats and reset work."""
    script = Path(__file__).resolve().parent.parent / "bench" / "fake_model.py"
    with subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            with httpx.Client(base_url=url, timeout=5) as client:
                sized = client.post("/api/chat", json=_chat(stream=False, options={"num_predict": 20})).json()
                assert sized["message"]["content"] == reply_text(20)
                config = {"tokens": 5, "delay_ms": 0, "batch_writes": True}
                assert client.post("/_bench/config", json=config).json() == {**config, "delay_ms": 0.0}
                streamed = _events(client.post(OPENAI, json=_chat(stream=True)).content)
                assert "".join(e["choices"][0]["delta"].get("content", "") for e in streamed[:-1]) == reply_text(5)
                stats = client.get("/_bench/stats").json()
                assert (stats["chat_requests"], stats["stream_requests"], stats["tokens_sent"]) == (2, 1, 25)
                client.post("/_bench/reset")
                assert client.get("/_bench/stats").json()["chat_requests"] == 0
        finally:
            process.terminate()
        assert process.wait(timeout=5) == 0
