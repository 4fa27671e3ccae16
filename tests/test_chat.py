"""`POST /chat` end to end: piagent served by uvicorn, talking to a fake Ollama over loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from bench.fakemodel import FakeModel, Script
from piagent import Settings, create_app
from piagent.schemas import TokenEvent
from tests.bodies import error_body, without_request_id
from tests.servers import TRANSPORTS, Served, both_transports, serve_app
from tests.settle import assert_settled, baseline_tasks


def chat(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/chat", json={"message": "hi", **body})


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], msgspec.json.decode(fields["data"])))
    return events


def test_non_stream_reply_with_usage_and_a_new_unguessable_conversation_id(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(tokens=["Hel", "lo"], prompt_eval_count=11)
    response = chat(client)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "conversation_id": body["conversation_id"],
        "agent": "general",
        "model": "test-model",
        "reply": "Hello",
        "done_reason": "stop",
        "usage": {"prompt_tokens": 11, "completion_tokens": 2},
        # Ollama's own durations (nanoseconds), relayed as it sent them.
        "timings": {"load_duration": 1000, "prompt_eval_duration": 1000, "eval_duration": 5000},
    }
    assert len(body["conversation_id"]) >= 22
    assert response.headers["x-conversation-id"] == body["conversation_id"]
    assert chat(client).json()["conversation_id"] != body["conversation_id"]


def test_the_upstream_gets_system_prompt_history_and_message_with_the_agents_model_and_options(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    first = chat(client, agent="pirate", message="ahoy").json()
    chat(client, agent="pirate", message="again", conversation_id=first["conversation_id"], options={"max_tokens": 9})
    sent = fake_ollama.chat_requests[-1]
    assert sent["model"] == "pirate-model"
    assert sent["stream"] is True
    assert sent["options"] == {"temperature": 0.1, "num_ctx": 512, "num_predict": 9}
    assert sent["messages"] == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "ahoy"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "again"},
    ]


def test_request_options_override_the_agents(client: httpx.Client, fake_ollama: FakeModel) -> None:
    chat(client, agent="pirate", options={"temperature": 1.5, "top_p": 0.5, "seed": 3, "stop": ["\n"]})
    assert fake_ollama.chat_requests[-1]["options"] == {
        "temperature": 1.5,
        "num_ctx": 512,
        "top_p": 0.5,
        "seed": 3,
        "stop": ["\n"],
        "num_predict": 1024,  # PIAGENT_MAX_TOKENS, since neither the request nor the agent set a length
    }


def test_memory_keeps_only_the_agents_last_turns(client: httpx.Client, fake_ollama: FakeModel) -> None:
    conversation = chat(client, agent="pirate", message="m0").json()["conversation_id"]
    for n in range(1, 4):
        chat(client, agent="pirate", message=f"m{n}", conversation_id=conversation)
    history = fake_ollama.chat_requests[-1]["messages"][1:-1]
    assert [m["content"] for m in history] == ["m1", "Hello, world!", "m2", "Hello, world!"]


def test_memory_off_sends_no_history(serve: Any, fake_ollama: FakeModel) -> None:
    with serve(memory_enabled=False) as url, httpx.Client(base_url=url) as client:
        conversation = chat(client).json()["conversation_id"]
        chat(client, conversation_id=conversation, message="second")
        assert [m["role"] for m in fake_ollama.chat_requests[-1]["messages"]] == ["system", "user"]
        assert client.get("/health").json()["conversations"] == 0


def test_a_failure_before_the_first_token_leaves_the_conversation_as_it_was(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    conversation = chat(client, message="one").json()["conversation_id"]
    fake_ollama.script = Script(status=500, error="model requires more system memory")
    assert chat(client, message="lost", conversation_id=conversation).status_code == 502
    fake_ollama.script = Script()
    chat(client, message="three", conversation_id=conversation)
    contents = [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]]
    assert contents == ["one", "Hello, world!", "three"]


@both_transports
def test_plain_text_stream_arrives_token_by_token(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c", "d", "e"], delay=0.1)
    started = time.monotonic()
    with client.stream("POST", "/chat", json={"message": "hi", "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-conversation-id"]
        arrivals = [(time.monotonic() - started, chunk) for chunk in response.iter_raw()]
    assert b"".join(chunk for _, chunk in arrivals) == b"abcde"
    assert arrivals[0][0] < 0.3 < 0.4 <= arrivals[-1][0]


@both_transports
def test_sse_stream_sends_token_events_then_done(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["Hi", " \u2028there"], prompt_eval_count=3)
    response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    conversation = response.headers["x-conversation-id"]
    assert sse_events(response.text) == [
        ("token", {"event": "token", "text": "Hi"}),
        ("token", {"event": "token", "text": " \u2028there"}),
        (
            "done",
            {
                "event": "done",
                "conversation_id": conversation,
                "done_reason": "stop",
                "usage": {"prompt_tokens": 3, "completion_tokens": 2},
            },
        ),
    ]


@both_transports
def test_ndjson_stream_sends_the_same_events_as_lines(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["x", "y"], done_reason="length")
    response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "application/x-ndjson"})
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [msgspec.json.decode(line) for line in response.text.splitlines()]
    assert [line["event"] for line in lines] == ["token", "token", "done"]
    assert lines[-1]["done_reason"] == "length"


def test_the_sse_token_bytes_equal_the_token_event_encoding(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=['"quoted" \\ and </script>'])
    response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
    expected = b"event: token\ndata: " + msgspec.json.encode(TokenEvent('"quoted" \\ and </script>')) + b"\n\n"
    assert response.content.startswith(expected)


def test_a_streamed_reply_is_remembered_for_the_next_request(client: httpx.Client, fake_ollama: FakeModel) -> None:
    response = client.post("/chat", json={"message": "first", "stream": True})
    chat(client, message="second", conversation_id=response.headers["x-conversation-id"])
    assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == ["first", "Hello, world!", "second"]


def test_an_error_before_the_first_token_gets_a_real_status_even_when_streaming(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(status=404, error="model 'test-model' not found, try pulling it first")
    response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
    assert response.status_code == 502
    assert error_body(response) == {
        "error": {
            "code": "upstream_error",
            "message": "ollama: model 'test-model' not found, try pulling it first (HTTP 404)",
        }
    }


def test_a_mid_stream_upstream_error_ends_sse_with_an_error_event(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c"], error_after=2, error="out of memory")
    response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert sse_events(response.text) == [
        ("token", {"event": "token", "text": "a"}),
        ("token", {"event": "token", "text": "b"}),
        (
            "error",
            {
                "event": "error",
                "code": "upstream_error",
                "message": "ollama: out of memory",
                "request_id": response.headers["x-request-id"],
            },
        ),
    ]


@both_transports
def test_a_mid_stream_upstream_error_leaves_a_plain_text_transfer_incomplete(
    client: httpx.Client, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(tokens=["a", "b", "c"], error_after=2)
    received: list[bytes] = []

    def read_all() -> None:
        with client.stream("POST", "/chat", json={"message": "hi", "stream": True}) as response:
            received.extend(response.iter_raw())

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert b"".join(received) == b"ab"


def test_a_partial_reply_cut_by_an_upstream_error_is_remembered(client: httpx.Client, fake_ollama: FakeModel) -> None:
    fake_ollama.script = Script(tokens=["part", "ial", "x"], error_after=2)
    response = client.post("/chat", json={"message": "q", "stream": True}, headers={"Accept": "application/x-ndjson"})
    fake_ollama.script = Script()
    chat(client, message="next", conversation_id=response.headers["x-conversation-id"])
    assert [m["content"] for m in fake_ollama.chat_requests[-1]["messages"][1:]] == ["q", "partial", "next"]


# Short timeouts and a small line cap, so every fault below shows within a fraction of a second.
FAULT_SETTINGS: dict[str, Any] = {"first_token_timeout": 0.5, "read_timeout": 0.3, "max_line_bytes": 1024}
LONG_LINE = b'{"message":{"content":"' + b"x" * 2000 + b'"},"done":false}\n'
NOT_UTF8 = b'{"message":{"content":"\xff\xfe"},"done":false}\n'


def token_line(text: str) -> bytes:
    return msgspec.json.encode({"message": {"role": "assistant", "content": text}, "done": False}) + b"\n"


@pytest.fixture(scope="module")
def fault_ollama() -> Iterator[FakeModel]:
    """One fake Ollama for every fault case (each sets its own script)."""
    with FakeModel() as fake:
        yield fake
    assert fake.errors == [], "the fake Ollama itself failed"


@pytest.fixture(scope="module", params=TRANSPORTS)
def fault_server(
    fault_ollama: FakeModel, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Served]:
    """One piagent per upstream transport with short timeouts for every fault case: each must leave it clean."""
    prompts = tmp_path_factory.mktemp("prompts")
    (prompts / "general.md").write_text("You are a test assistant.\n", encoding="utf-8")
    settings = Settings(
        ollama_url=fault_ollama.url,
        prompts_dir=str(prompts),
        model="test-model",
        fast_transport=request.param,
        **FAULT_SETTINGS,
    )
    with serve_app(create_app(settings)) as served:
        yield served


def stored_turns(served: Served, conversation: str) -> list[tuple[str, str, bool]]:
    """The conversation as the server's memory holds it: (role, text, interrupted) per turn."""
    store = served.runtime.store
    assert store is not None
    return [(t.role, t.text, t.interrupted) for t in served.call(lambda: store.history(conversation, "", 100))]


def start_conversation(client: httpx.Client, fake: FakeModel) -> tuple[str, list[tuple[str, str, bool]]]:
    fake.script = Script(tokens=["fine"])
    conversation = chat(client, message="before").json()["conversation_id"]
    return conversation, [("user", "before", False), ("assistant", "fine", False)]


@pytest.mark.parametrize(
    ("script", "status", "code", "message"),
    [
        pytest.param(
            Script(status=404, error="model 'x' not found"),
            502,
            "upstream_error",
            "ollama: model 'x' not found (HTTP 404)",
            id="upstream-404",
        ),
        pytest.param(
            Script(status=500, error="model requires more system memory"),
            502,
            "upstream_error",
            "ollama: model requires more system memory (HTTP 500)",
            id="upstream-500",
        ),
        pytest.param(
            Script(status=503, error="server busy"), 503, "upstream_unavailable", "server busy", id="upstream-busy"
        ),
        pytest.param(
            Script(stall_before_headers=True),
            504,
            "upstream_timeout",
            "ollama did not start its reply within 0.5 s",
            id="stall-before-the-head",
        ),
        pytest.param(
            Script(stall_after=0),
            504,
            "upstream_timeout",
            "ollama went silent for 0.3 s after starting its reply",
            id="stall-after-the-head",
        ),
        pytest.param(Script(reset_after=-1), 502, "upstream_error", "broke the connection", id="reset-before-the-head"),
        pytest.param(Script(reset_after=0), 502, "upstream_error", "broke the connection", id="reset-after-the-head"),
        pytest.param(Script(raw_body=[b"not json\n"]), 502, "upstream_error", "not valid JSON", id="invalid-json"),
        pytest.param(
            Script(raw_body=[LONG_LINE]), 502, "upstream_error", "longer than 1024 bytes", id="line-over-the-cap"
        ),
        pytest.param(Script(raw_body=[NOT_UTF8]), 502, "upstream_error", "not valid JSON", id="not-utf8"),
    ],
)
def test_upstream_failures_before_the_first_token_get_a_status_and_leave_nothing_behind(
    fault_server: Served, fault_ollama: FakeModel, script: Script, status: int, code: str, message: str
) -> None:
    served, fake_ollama = fault_server, fault_ollama
    with httpx.Client(base_url=served.url) as client:
        baseline = baseline_tasks(served)
        for stream, accept in [(False, "application/json"), (True, "text/event-stream")]:
            conversation, before = start_conversation(client, fake_ollama)
            fake_ollama.script = script
            response = client.post(
                "/chat",
                json={"message": "lost", "conversation_id": conversation, "stream": stream},
                headers={"Accept": accept},
            )
            assert response.status_code == status, (stream, response.text)
            body = error_body(response)
            assert body == {"error": {"code": code, "message": body["error"]["message"]}}
            assert message in body["error"]["message"]
            assert "127.0.0.1" not in response.text
            assert_settled(served, baseline, fake_ollama)
            assert stored_turns(served, conversation) == before


@pytest.mark.parametrize(
    ("script", "code", "message", "partials"),
    [
        # A TCP reset makes the kernel drop what was not read yet, so "b" (sent just before it) may be lost.
        pytest.param(
            Script(tokens=["a", "b", "c"], delay=0.1, reset_after=2),
            "upstream_error",
            "broke the connection",
            ("a", "ab"),
            id="reset",
        ),
        pytest.param(
            Script(tokens=["a", "b", "c"], stall_after=2),
            "upstream_timeout",
            "went silent for 0.3 s",
            ("ab",),
            id="stall",
        ),
        pytest.param(
            Script(tokens=["a", "b", "c"], error_after=2, error="out of memory"),
            "upstream_error",
            "ollama: out of memory",
            ("ab",),
            id="error-line",
        ),
        pytest.param(
            Script(raw_body=[token_line("a"), token_line("b"), b"{nope\n"]),
            "upstream_error",
            "not valid JSON",
            ("ab",),
            id="invalid-json",
        ),
        pytest.param(
            Script(raw_body=[token_line("a"), token_line("b"), LONG_LINE]),
            "upstream_error",
            "longer than 1024 bytes",
            ("ab",),
            id="line-over-the-cap",
        ),
        pytest.param(
            Script(raw_body=[token_line("a"), token_line("b"), NOT_UTF8]),
            "upstream_error",
            "not valid JSON",
            ("ab",),
            id="not-utf8",
        ),
    ],
)
def test_upstream_failures_mid_stream_end_in_band_and_keep_the_partial_reply(
    fault_server: Served, fault_ollama: FakeModel, script: Script, code: str, message: str, partials: tuple[str, ...]
) -> None:
    served, fake_ollama = fault_server, fault_ollama

    def assert_partial_kept(served: Served, conversation: str, before: list[Any], seen: str) -> None:
        assert seen in partials
        assert_settled(served, baseline, fake_ollama)
        assert stored_turns(served, conversation) == [*before, ("user", "cut", False), ("assistant", seen, True)]

    body = {"message": "cut", "stream": True}
    with httpx.Client(base_url=served.url) as client:
        baseline = baseline_tasks(served)
        for accept in ["text/event-stream", "application/x-ndjson"]:
            conversation, before = start_conversation(client, fake_ollama)
            fake_ollama.script = script
            response = client.post("/chat", json={**body, "conversation_id": conversation}, headers={"Accept": accept})
            assert response.status_code == 200
            if accept == "text/event-stream":
                events = [data for _, data in sse_events(response.text)]
            else:
                events = [msgspec.json.decode(line) for line in response.text.splitlines()]
            *tokens, last = events
            assert all(event["event"] == "token" for event in tokens)
            assert without_request_id(last, response) == {"event": "error", "code": code, "message": last["message"]}
            assert message in last["message"]
            assert_partial_kept(served, conversation, before, "".join(event["text"] for event in tokens))

        conversation, before = start_conversation(client, fake_ollama)
        fake_ollama.script = script
        received: list[bytes] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),  # plain text: an incomplete transfer tells the client
            client.stream("POST", "/chat", json={**body, "conversation_id": conversation}) as response,
        ):
            received.extend(response.iter_raw())
        assert_partial_kept(served, conversation, before, b"".join(received).decode())

        conversation, before = start_conversation(client, fake_ollama)
        fake_ollama.script = script
        response = chat(client, message="cut", conversation_id=conversation)
        assert response.status_code in (502, 504)
        assert response.json()["error"]["code"] == code
        assert_settled(served, baseline, fake_ollama)
        assert stored_turns(served, conversation)[:-1] == [*before, ("user", "cut", False)]
        assert stored_turns(served, conversation)[-1][::2] == ("assistant", True)


@both_transports
def test_the_first_token_and_idle_timeouts_each_bound_their_own_phase(serve_full: Any, fake_ollama: FakeModel) -> None:
    settings = {"first_token_timeout": 3.0, "read_timeout": 0.3}
    with serve_full(**settings) as served, httpx.Client(base_url=served.url) as client:
        # A slow start (a cold model load) longer than the idle timeout is fine: the first-token one applies.
        fake_ollama.script = Script(header_delay=0.6, tokens=["a", "b"])
        response = client.post("/chat", json={"message": "hi", "stream": True})
        assert (response.status_code, response.text) == (200, "ab")
        # Silence once the reply has begun is bounded by the idle timeout, not the long first-token one.
        fake_ollama.script = Script(tokens=["a", "b", "c"], stall_after=1)
        started = time.monotonic()
        response = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
        elapsed = time.monotonic() - started
        *tokens, last = [data for _, data in sse_events(response.text)]
        assert [*tokens, without_request_id(last, response)] == [
            {"event": "token", "text": "a"},
            {
                "event": "error",
                "code": "upstream_timeout",
                "message": "ollama went silent for 0.3 s after starting its reply",
            },
        ]
        assert 0.3 <= elapsed < 2.0


def test_an_unreachable_upstream_is_503_naming_it(serve_full: Any) -> None:
    with serve_full(ollama_url="http://127.0.0.1:9") as served, httpx.Client(base_url=served.url) as client:
        baseline = baseline_tasks(served)
        for stream in (False, True):
            response = chat(client, stream=stream)
            assert response.status_code == 503
            assert error_body(response)["error"] == {
                "code": "upstream_unavailable",
                "message": "ollama is unreachable (connection refused or no route); is it running?",
            }
            assert_settled(served, baseline)
