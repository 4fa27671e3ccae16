"""`/metrics` beyond the happy path: upstream failures, a store that is down, tool calls, the first token's time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.fakemodel import FakeModel, Script, ToolCall
from piagent import create_app
from tests.conftest import MakeSettings
from tests.servers import serve_app
from tests.test_metrics import samples


def value(scrape: str, name: str, **labels: str) -> float:
    """One sample of a scrape (0 when it is absent: a counter never incremented has no sample)."""
    return samples(scrape).get((name, tuple(sorted(labels.items()))), 0.0)


def test_upstream_failures_are_counted_by_kind_and_upstream_name(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    # The first upstream refuses connections; the second is the fake, which then fails in three ways.
    settings = make_settings(metrics=True, ollama_url=f"http://127.0.0.1:9,{fake_ollama.url}", read_timeout=0.3)
    with serve_app(create_app(settings)) as served, httpx.Client(base_url=served.url, timeout=10) as client:
        assert client.post("/chat", json={"message": "hi"}).status_code == 200  # #1 refused, #2 answered
        fake_ollama.script = Script(status=500, error="model crashed")
        assert client.post("/chat", json={"message": "hi"}).status_code == 502
        fake_ollama.script = Script(tokens=["a", "b"], error_after=1, error="out of memory")
        streamed = client.post("/chat", json={"message": "hi", "stream": True}, headers={"Accept": "text/event-stream"})
        assert "event: error" in streamed.text
        fake_ollama.script = Script(tokens=["a", "b"], stall_after=1)
        assert client.post("/chat", json={"message": "hi"}).status_code == 504
        scrape = client.get("/metrics").text
    assert value(scrape, "piagent_upstream_errors_total", kind="upstream_unavailable", upstream="ollama#1") >= 1
    assert value(scrape, "piagent_upstream_errors_total", kind="upstream_error", upstream="ollama#2") == 2
    assert value(scrape, "piagent_upstream_errors_total", kind="upstream_timeout", upstream="ollama#2") == 1
    assert value(scrape, "piagent_upstream_errors_total", kind="upstream_unavailable", upstream="ollama#2") == 0
    assert "127.0.0.1" not in scrape  # upstreams by name, never by URL


def test_store_calls_and_the_calls_that_found_it_down_are_counted(
    make_settings: MakeSettings, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    with serve_app(create_app(make_settings(metrics=True))) as served, httpx.Client(base_url=served.url) as client:
        conversation = client.post("/chat", json={"message": "hi"}).json()["conversation_id"]
        client.post("/chat", json={"message": "again", "conversation_id": conversation})
        assert client.get(f"/conversations/{conversation}").status_code == 200
        working = client.get("/metrics").text
    for operation, calls in (("check", 1), ("history", 2), ("append", 2), ("get", 1)):
        assert value(working, "piagent_store_calls_total", store="memory", operation=operation) == calls
        assert value(working, "piagent_store_errors_total", store="memory", operation=operation) == 0
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the database's folder should be: every call fails
    settings = make_settings(metrics=True, memory_url=f"sqlite:///{blocker}/piagent.db")
    with serve_app(create_app(settings)) as served, httpx.Client(base_url=served.url) as client:
        assert client.post("/chat", json={"message": "hi"}).status_code == 503
        down = client.get("/metrics").text
    for operation in ("check", "history"):
        assert value(down, "piagent_store_calls_total", store="sqlite", operation=operation) == 1
        assert value(down, "piagent_store_errors_total", store="sqlite", operation=operation) == 1
    assert fake_ollama.chat_requests[-1]["messages"][-1]["content"] == "again"  # the down store's chat never went


def test_tool_calls_are_counted_by_tool_and_outcome(fake_ollama: FakeModel, tmp_path: Path) -> None:
    from piagent import Settings
    from tests.test_agent_tools import settings_for

    folder = tmp_path / "acting"
    folder.mkdir()
    (folder / "general.md").write_text("---\ntools: [calculator, nap]\n---\nYou act.\n", encoding="utf-8")
    tools = tmp_path / "tools.toml"
    tools.write_text(
        '[tools.nap]\ndescription = "Waits"\nargv = ["/bin/sleep", "{seconds}"]\ntimeout = 0.5\n'
        '[tools.nap.parameters.seconds]\ntype = "integer"\n',
        encoding="utf-8",
    )
    fake_ollama.queue = [
        Script(
            tokens=[],
            tool_calls=[
                ToolCall("calculator", {"expression": "1 + 1"}),
                ToolCall("calculator", {"expression": "2**99999"}),  # the tool refuses: an error result
                ToolCall("calculator", {}),  # no expression
                ToolCall("rm_rf", {}),  # a tool the agent does not have
                ToolCall("calculator", {"expression": "2"}),  # past the step's 4 calls: refused
            ],
        ),
        Script(tokens=[], tool_calls=[ToolCall("nap", {"seconds": 5})]),
        Script(tokens=["done"]),
    ]
    settings = settings_for(fake_ollama, folder, "ollama", tools_file=str(tools), metrics=True, tool_max_calls=4)
    settings.update(min_available_mb=0, max_temperature_c=0)
    with serve_app(create_app(Settings(**settings))) as served, httpx.Client(base_url=served.url, timeout=20) as client:
        assert client.post("/chat", json={"message": "go"}).json()["reply"] == "done"
        scrape = client.get("/metrics").text
    counted = {
        (labels["tool"], labels["outcome"]): count
        for (name, pairs), count in samples(scrape).items()
        if name == "piagent_tool_calls_total"
        for labels in [dict(pairs)]
    }
    assert counted == {
        ("calculator", "ok"): 1,
        ("calculator", "error"): 1,
        ("calculator", "invalid_arguments"): 1,
        ("-", "unknown_tool"): 1,
        ("calculator", "refused"): 1,
        ("nap", "timeout"): 1,
    }


def test_the_first_token_is_timed_from_the_request_for_queued_streams_and_whole_replies(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    fake_ollama.script = Script(tokens=["a", "b"], delay=0.4)  # first token at once, the reply ~0.8 s
    app = create_app(make_settings(metrics=True, max_concurrent=1, max_queue=1))
    with (
        serve_app(app) as served,
        httpx.Client(base_url=served.url, timeout=10) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        assert client.post("/chat", json={"message": "whole"}).status_code == 200
        whole = client.get("/metrics").text
        holder = pool.submit(client.post, "/chat", json={"message": "first", "stream": True})
        assert fake_ollama.wait_for_requests(2, timeout=5)
        asked = time.monotonic()
        queued = client.post(
            "/chat", json={"message": "second", "stream": True}, headers={"Accept": "text/event-stream"}
        )
        ended = time.monotonic() - asked
        assert holder.result(timeout=10).text == "ab"
        scrape = client.get("/metrics").text
    # A whole reply: its first token's time is known, and well before its end.
    assert value(whole, "piagent_time_to_first_token_seconds_count", agent="general") == 1
    assert value(whole, "piagent_time_to_first_token_seconds_sum", agent="general") < 0.4
    assert value(whole, "piagent_reply_duration_seconds_sum", agent="general") >= 0.8
    # The queued stream's first token came after the other reply's ~0.8 s, timed from its arrival.
    assert queued.text.startswith("event: queued\n")
    assert value(scrape, "piagent_time_to_first_token_seconds_count", agent="general") == 3
    timed = value(scrape, "piagent_time_to_first_token_seconds_sum", agent="general") - value(
        whole, "piagent_time_to_first_token_seconds_sum", agent="general"
    )
    assert 0.5 < timed < ended  # the holder's (near 0) and the queued one's (its wait, then the token)
