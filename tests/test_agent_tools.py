"""Agents that act, end to end: a scripted model calls tools through /chat and the doors, piagent runs them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel, Script, ToolCall
from piagent import create_app
from tests.servers import serve_in_thread

REPO = Path(__file__).resolve().parent.parent
# The README's example agent, as shipped: how hot is the Pi and how full is the disk?
PI_AGENT = (REPO / "prompts" / "pi.md").read_text(encoding="utf-8")
COMMANDS = (
    (REPO / "prompts" / "tools.toml").read_text(encoding="utf-8")
    + """
[tools.nap]
description = "Waits"
argv = ["/bin/sleep", "{seconds}"]
timeout = 30
[tools.nap.parameters.seconds]
type = "integer"
minimum = 1
maximum = 60
"""
)
QUESTION = "How hot is the Pi and how full is the disk?"
ANSWER = ["The Pi is", " warm", " and the disk is 11% used."]


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "pi.md").write_text(PI_AGENT, encoding="utf-8")
    (folder / "general.md").write_text("You are a test assistant.\n", encoding="utf-8")
    (folder / "napper.md").write_text("---\ntools: [nap]\n---\nYou wait.\n", encoding="utf-8")
    (folder / "boss.md").write_text(
        "---\ndescription: Asks others.\ndelegates: [pi, helper]\n---\nYou delegate.\n", encoding="utf-8"
    )
    (folder / "helper.md").write_text("---\ndescription: Helps.\ndelegates: [boss]\n---\nYou help.\n", encoding="utf-8")
    (tmp_path / "tools.toml").write_text(COMMANDS, encoding="utf-8")
    return folder


def settings_for(fake: FakeModel, agents_dir: Path, protocol: str, **overrides: Any) -> dict[str, Any]:
    upstream = {"ollama_url": fake.url} if protocol == "ollama" else {"provider": "openai", "openai_url": fake.url}
    return {
        **upstream,
        "prompts_dir": str(agents_dir),
        "default_agent": "general",
        "model": "test-model",
        "tools_file": str(agents_dir.parent / "tools.toml"),
        "read_timeout": 10.0,
        **overrides,
    }


@pytest.fixture(params=["ollama", "openai"])
def served(request: pytest.FixtureRequest, fake_ollama: FakeModel, agents_dir: Path) -> Iterator[tuple[str, FakeModel]]:
    from piagent import Settings

    settings = Settings(**settings_for(fake_ollama, agents_dir, request.param))
    with serve_in_thread(create_app(settings)) as url:
        yield url, fake_ollama


def script_pi_question(fake: FakeModel) -> None:
    fake.queue = [
        Script(
            tokens=[],
            tool_calls=[
                ToolCall("system_status", {}),
                ToolCall("calculator", {"expression": "100 - 59"}),
                ToolCall("disk_usage", {}),
            ],
            done_reason="tool_calls",
        ),
        Script(tokens=ANSWER),
    ]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_an_agent_answers_with_its_tools_and_streams_each_step(served: tuple[str, FakeModel]) -> None:
    url, fake = served
    script_pi_question(fake)
    with httpx.Client(base_url=url, timeout=20) as http:
        response = http.post(
            "/chat",
            json={"agent": "pi", "message": QUESTION, "stream": True},
            headers={"Accept": "text/event-stream"},
        )
        assert response.status_code == 200
        events = sse_events(response.text)
        kinds = [kind for kind, _ in events]
        assert kinds == ["tool_call"] * 3 + ["tool_result"] * 3 + ["token"] * 3 + ["done"]
        calls = [data for kind, data in events if kind == "tool_call"]
        assert [c["name"] for c in calls] == ["system_status", "calculator", "disk_usage"]
        assert json.loads(calls[1]["arguments"]) == {"expression": "100 - 59"}
        results = {data["name"]: data for kind, data in events if kind == "tool_result"}
        assert all(r["ok"] for r in results.values()), events
        assert results["calculator"]["preview"] == "41"
        assert results["disk_usage"]["preview"].startswith("Filesystem")  # df -h / ran, no shell
        assert results["disk_usage"]["preview"].endswith(" /")
        assert "load" in results["system_status"]["preview"]
        assert "".join(data["text"] for kind, data in events if kind == "token") == "".join(ANSWER)

        # The model's second call carried the calls and their results, in its own protocol.
        second = fake.chat_requests[1]["messages"]
        assert [m["role"] for m in second[-4:]] == ["assistant", "tool", "tool", "tool"]
        assert [c["function"]["name"] for c in second[-4]["tool_calls"]] == [
            "system_status",
            "calculator",
            "disk_usage",
        ]
        assert second[-2]["content"] == "41"
        tools_offered = {t["function"]["name"] for t in fake.chat_requests[0]["tools"]}
        assert tools_offered == {"system_status", "calculator", "disk_usage"}

        # Memory keeps the whole exchange: the next turn sends it upstream, and the API shows it.
        conversation = response.headers["x-conversation-id"]
        fake.queue = [Script(tokens=["Still warm."])]
        http.post("/chat", json={"agent": "pi", "message": "And now?", "conversation_id": conversation})
        third = fake.chat_requests[2]["messages"]
        assert [m["role"] for m in third[1:]] == ["user", "assistant", "tool", "tool", "tool", "assistant", "user"]
        turns = http.get(f"/conversations/{conversation}").json()["turns"]
        assert [t["role"] for t in turns[:6]] == ["user", "assistant", "tool", "tool", "tool", "assistant"]
        assert [c["name"] for c in turns[1]["tool_calls"]] == ["system_status", "calculator", "disk_usage"]
        assert turns[3]["name"] == "calculator"
        assert turns[5]["text"] == "".join(ANSWER)


def test_plain_text_streams_only_the_words_and_json_lists_the_steps(served: tuple[str, FakeModel]) -> None:
    url, fake = served
    with httpx.Client(base_url=url, timeout=20) as http:
        script_pi_question(fake)
        plain = http.post("/chat", json={"agent": "pi", "message": QUESTION, "stream": True})
        assert plain.text == "".join(ANSWER)
        script_pi_question(fake)
        ndjson = http.post(
            "/chat",
            json={"agent": "pi", "message": QUESTION, "stream": True},
            headers={"Accept": "application/x-ndjson"},
        )
        assert [json.loads(line)["event"] for line in ndjson.text.splitlines()][:6] == ["tool_call"] * 3 + [
            "tool_result"
        ] * 3
        script_pi_question(fake)
        whole = http.post("/chat", json={"agent": "pi", "message": QUESTION}).json()
        assert whole["reply"] == "".join(ANSWER)
        assert [(s["name"], s["ok"]) for s in whole["steps"]] == [
            ("system_status", True),
            ("calculator", True),
            ("disk_usage", True),
        ]
        assert whole["usage"]["prompt_tokens"] == 14  # both model calls counted


def test_the_front_doors_run_the_agents_tools_when_the_client_brings_none(served: tuple[str, FakeModel]) -> None:
    url, fake = served
    script_pi_question(fake)
    with httpx.Client(base_url=url, timeout=20) as http:
        reply = http.post("/v1/chat/completions", json={"model": "pi", "messages": [{"role": "user", "content": "?"}]})
        assert reply.json()["choices"][0]["message"]["content"] == "".join(ANSWER)
        assert reply.json()["choices"][0]["finish_reason"] == "stop"
        script_pi_question(fake)
        lines = http.post("/api/chat", json={"model": "pi", "messages": [{"role": "user", "content": "?"}]})
        pieces = [json.loads(line) for line in lines.text.splitlines()]
        assert "".join(p["message"]["content"] for p in pieces) == "".join(ANSWER)
        assert all("tool_calls" not in p["message"] for p in pieces)


def test_a_tool_the_model_invents_or_misuses_is_an_error_result_never_a_failure(
    fake_ollama: FakeModel, agents_dir: Path
) -> None:
    from piagent import Settings

    fake_ollama.queue = [
        Script(tokens=[], tool_calls=[ToolCall("rm_rf", {}), ToolCall("calculator", {"expression": "2**99999"})]),
        Script(tokens=["I could not."]),
    ]
    with serve_in_thread(create_app(Settings(**settings_for(fake_ollama, agents_dir, "ollama")))) as url:
        whole = httpx.post(f"{url}/chat", json={"agent": "pi", "message": "x"}, timeout=20).json()
    assert whole["reply"] == "I could not."
    assert [s["ok"] for s in whole["steps"]] == [False, False]
    assert "unknown tool 'rm_rf'" in whole["steps"][0]["preview"]
    sent = fake_ollama.chat_requests[1]["messages"]
    assert "unknown tool" in sent[-2]["content"]


def _children_running(seconds: str) -> list[int]:
    """The pids of `/bin/sleep <seconds>` processes."""
    marker = f"/bin/sleep\0{seconds}\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline == marker.encode():
                found.append(int(entry.name))
    return found


def test_a_client_that_leaves_mid_tool_kills_the_command(fake_ollama: FakeModel, agents_dir: Path) -> None:
    from piagent import Settings

    fake_ollama.queue = [Script(tokens=[], tool_calls=[ToolCall("nap", {"seconds": 47})]), Script(tokens=["late"])]
    with serve_in_thread(create_app(Settings(**settings_for(fake_ollama, agents_dir, "ollama")))) as url:
        with httpx.stream(
            "POST",
            f"{url}/chat",
            json={"agent": "napper", "message": "wait", "stream": True},
            headers={"Accept": "application/x-ndjson"},
            timeout=20,
        ) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["event"] == "tool_call"
            deadline = time.monotonic() + 5
            while not _children_running("47") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _children_running("47"), "the command never started"
        left = time.monotonic()
        while _children_running("47") and time.monotonic() - left < 2:
            time.sleep(0.01)
        gone_after = time.monotonic() - left
    assert not _children_running("47")
    assert gone_after < 0.2, f"the command outlived its client by {gone_after:.3f} s"
    assert len(fake_ollama.chat_requests) == 1  # the model was not asked again


def test_an_agent_asks_another_and_cycles_and_depth_are_refused(fake_ollama: FakeModel, agents_dir: Path) -> None:
    from piagent import Settings

    fake_ollama.queue = [
        Script(tokens=[], tool_calls=[ToolCall("ask_agent", {"agent": "helper", "question": "Who is asking?"})]),
        # helper, asked by boss, tries to ask boss back: a cycle, refused as an error result
        Script(tokens=[], tool_calls=[ToolCall("ask_agent", {"agent": "boss", "question": "You?"})]),
        Script(tokens=["The boss asked."]),
        Script(tokens=["Helper says the boss asked."]),
    ]
    with serve_in_thread(create_app(Settings(**settings_for(fake_ollama, agents_dir, "ollama")))) as url:
        whole = httpx.post(f"{url}/chat", json={"agent": "boss", "message": "Ask helper"}, timeout=20).json()
    assert whole["reply"] == "Helper says the boss asked."
    (step,) = whole["steps"]
    assert (step["name"], step["ok"]) == ("ask_agent", True)
    assert step["preview"] == "helper answered: The boss asked."
    cycle_result = fake_ollama.chat_requests[2]["messages"][-1]
    assert cycle_result["role"] == "tool"
    assert "boss is already answering in this chain (boss > helper); cycles are refused" in cycle_result["content"]
    # Each agent spoke with its own prompt.
    assert fake_ollama.chat_requests[1]["messages"][0]["content"] == "You help."


def test_a_tool_an_agent_lists_must_exist_at_start_up(fake_ollama: FakeModel, agents_dir: Path) -> None:
    from piagent import Settings
    from piagent.exceptions import AgentDefinitionError

    (agents_dir / "broken.md").write_text("---\ntools: [teleport]\n---\nx\n", encoding="utf-8")
    with pytest.raises(AgentDefinitionError, match="unknown tool 'teleport'"):
        create_app(Settings(**settings_for(fake_ollama, agents_dir, "ollama")))


def test_no_tool_module_is_imported_when_no_agent_acts(tmp_path: Path) -> None:
    (tmp_path / "general.md").write_text("You talk.\n", encoding="utf-8")
    code = (
        "import sys; from piagent import create_app, Settings; "
        f"create_app(Settings(prompts_dir={str(tmp_path)!r})); "
        "print(sorted(m for m in sys.modules if m.startswith(('piagent.tools.', 'piagent.mcp'))))"
    )
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)  # a list of module names printed by the child
    # The contract and the catalog only: no built-in, no command runner, no MCP client.
    allowed = ("piagent.tools.base", "piagent.tools.schema", "piagent.tools.delegate", "piagent.tools.registry")
    assert all(name in allowed for name in loaded), loaded


def test_piagent_tools_lists_what_each_agent_can_use_and_check_names_a_broken_one(
    agents_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    from tests.test_cli import base_env, run_cli

    env = base_env(
        agents_dir,
        PIAGENT_TOOLS_FILE=str(agents_dir.parent / "tools.toml"),
        PIAGENT_DEFAULT_AGENT="general",
        PIAGENT_OLLAMA_URL=fake_ollama.url,
    )
    listed = run_cli("tools", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "  disk_usage     command   runs /usr/bin/df -h / in / (no shell; 5 s)" in listed.stdout
    assert "  calculator     built-in  arithmetic only; reaches nothing" in listed.stdout
    assert "  pi: system_status, calculator, disk_usage" in listed.stdout
    assert "  boss: ask_agent (pi, helper)" in listed.stdout
    checked = run_cli("check", env=env, cwd=tmp_path)
    assert "\nTools:\n  boss: ask_agent (pi, helper)\n" in checked.stdout
    assert "\n  pi: system_status, calculator, disk_usage\n" in checked.stdout
    (agents_dir / "reader.md").write_text("---\ntools: [read_file]\n---\nYou read.\n", encoding="utf-8")
    broken = run_cli("check", env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert "agent 'reader': tool 'read_file': needs PIAGENT_READ_FILE_DIRS" in broken.stderr


def test_an_agent_takes_tools_from_an_mcp_server_and_deep_health_shows_it(
    fake_ollama: FakeModel, agents_dir: Path, tmp_path: Path
) -> None:
    from piagent import Settings
    from tests.mcp_harness import SERVER_COMMAND

    mcp_file = tmp_path / "mcp.toml"
    mcp_file.write_text(f"[mcp.servers.home]\ncommand = {json.dumps(SERVER_COMMAND)}\n", encoding="utf-8")
    (agents_dir / "house.md").write_text("---\nmcp: [home]\ntools: [clock]\n---\nYou run the house.\n", "utf-8")
    fake_ollama.queue = [
        Script(tokens=[], tool_calls=[ToolCall("home__add", {"a": 2, "b": 40})]),
        Script(tokens=["2 and 40 make 42."]),
    ]
    settings = Settings(**settings_for(fake_ollama, agents_dir, "ollama", mcp_file=str(mcp_file)))
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
        before = http.get("/health?deep=1").json()["mcp"]
        assert [(s["name"], s["state"]) for s in before] == [("home", "idle")]  # not started by a health check
        whole = http.post("/chat", json={"agent": "house", "message": "2 + 40?"}).json()
        assert whole.get("reply") == "2 and 40 make 42.", whole
        assert [(s["name"], s["ok"], s["preview"]) for s in whole["steps"]] == [("home__add", True, "42")]
        offered = {t["function"]["name"] for t in fake_ollama.chat_requests[0]["tools"]}
        assert {"clock", "home__add", "home__echo"} <= offered
        after = http.get("/health?deep=1").json()["mcp"]
        assert (after[0]["state"], after[0]["tools"] > 3) == ("ok", True)


def test_an_https_mcp_server_keeps_the_shared_client_on_a_transport_that_speaks_https(
    fake_ollama: FakeModel, agents_dir: Path, tmp_path: Path
) -> None:
    from starlette.testclient import TestClient

    from piagent import Settings
    from piagent.transport import HTTPToolsTransport

    mcp_file = tmp_path / "mcp.toml"
    mcp_file.write_text('[mcp.servers.weather]\nurl = "https://weather.example/mcp"\n', encoding="utf-8")
    plain = Settings(**settings_for(fake_ollama, agents_dir, "ollama"))
    with_mcp = Settings(**settings_for(fake_ollama, agents_dir, "ollama", mcp_file=str(mcp_file)))
    transports = []
    for settings in (plain, with_mcp):
        app = create_app(settings)
        with TestClient(app):
            transports.append(type(app.state.piagent.client._transport))
    assert transports[0] is HTTPToolsTransport  # plain-http model servers only: piagent's own transport
    assert transports[1] is not HTTPToolsTransport  # an https MCP server: httpx's, which speaks TLS
