"""`piagent check`: what it prints, and one line per problem with its fix, against a fake Ollama and a closed port."""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent.checks import check
from piagent.cli import warn_upstream
from piagent.settings import MASK, Settings, mask_secret
from tests.conftest import MakeSettings
from tests.servers import free_socket


def run_check(settings: Settings) -> tuple[int, str, list[str]]:
    """Exit code, the report, and the problem lines (without the count heading)."""
    out, err = io.StringIO(), io.StringIO()
    code = check(settings, out, err)
    problems = [line for line in err.getvalue().splitlines() if line and not line.endswith(("problem:", "problems:"))]
    return code, out.getvalue(), problems


def test_all_good_prints_the_set_up_and_exits_zero(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    fake_ollama.models = ["test-model", "pirate-model:latest", "unused:1b"]
    code, report, problems = run_check(make_settings())
    assert (code, problems) == (0, [])
    assert "Model server: ollama 0.12.0 at " + fake_ollama.url in report
    assert "  test-model: pulled (398 MB)" in report.splitlines()
    assert "  pirate-model: pulled (398 MB)" in report.splitlines()
    assert "  general  test-model" in report.splitlines()
    assert "Memory store: in this process, nothing to reach" in report
    assert report.rstrip().endswith(
        "All good: start the server with `piagent` and open http://127.0.0.1:8000/ in a browser."
    )
    assert [r.path for r in fake_ollama.requests] == ["/api/version", "/api/tags"]


def test_on_the_lan_the_page_address_is_the_hosts_mdns_name(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    _, report, _ = run_check(make_settings(host="0.0.0.0", port=8080))
    name = f"{socket.gethostname()}.local"
    assert f"open http://{name}:8080/ in a browser (set PIAGENT_ALLOWED_HOSTS={name} first" in report
    _, report, _ = run_check(make_settings(host="0.0.0.0", port=8080, allowed_hosts=(name.lower(),)))
    assert f"open http://{name}:8080/ in a browser." in report


def test_a_model_that_is_not_pulled_is_named_with_its_agent(
    make_settings: MakeSettings, fake_ollama: FakeModel
) -> None:
    fake_ollama.models = ["pirate-model"]
    code, report, problems = run_check(make_settings(model="qwen2.5:0.5b"))
    assert code == 1
    assert problems == ["model 'qwen2.5:0.5b' of agent 'general' is not pulled: run `ollama pull qwen2.5:0.5b`"]
    assert "  qwen2.5:0.5b: not pulled" in report.splitlines()


def test_agents_sharing_a_missing_model_get_one_line(
    make_settings: MakeSettings, fake_ollama: FakeModel, prompts_dir: Path
) -> None:
    (prompts_dir / "shell.md").write_text("You know the shell.\n")
    fake_ollama.models = ["pirate-model"]
    _, _, problems = run_check(make_settings())
    assert problems == ["model 'test-model' of agents 'general', 'shell' is not pulled: run `ollama pull test-model`"]


@pytest.mark.parametrize(
    ("agent_model", "pulled"),
    [
        pytest.param("llama3.2", "llama3.2:latest", id="no-tag-means-latest"),
        pytest.param("llama3.2:latest", "llama3.2", id="latest-is-no-tag"),
        pytest.param("me/tiny", "me/tiny:latest", id="namespaced"),
        pytest.param("host:5000/me/tiny", "host:5000/me/tiny:latest", id="registry-with-port"),
    ],
)
def test_a_model_name_without_a_tag_is_the_latest(
    make_settings: MakeSettings, fake_ollama: FakeModel, agent_model: str, pulled: str
) -> None:
    fake_ollama.models = [pulled, "pirate-model"]
    code, _, problems = run_check(make_settings(model=agent_model))
    assert (code, problems) == (0, [])


def test_an_ollama_that_is_not_running_is_one_line_with_the_fix(make_settings: MakeSettings) -> None:
    closed = free_socket()  # bound, never listening: the connection is refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    try:
        code, report, problems = run_check(make_settings(ollama_url=url))
    finally:
        closed.close()
    assert code == 1
    assert problems == [f"ollama is not reachable at {url}: start it with `ollama serve` or set PIAGENT_OLLAMA_URL"]
    assert f"Model server: ollama at {url}: not reachable" in report
    # The rest is still checked and shown.
    assert "Memory store:" in report
    assert "  general  test-model" in report.splitlines()


def test_a_server_that_is_not_ollama_is_named(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    url = fake_ollama.url + "/not-ollama"
    _, _, problems = run_check(make_settings(ollama_url=url))
    assert problems == [
        f"{url} does not answer like Ollama (ollama: not found (HTTP 404)): set PIAGENT_OLLAMA_URL to the Ollama "
        "server's address (port 11434 by default)"
    ]


def test_an_ollama_that_does_not_answer_in_time_is_named(make_settings: MakeSettings) -> None:
    def stuck(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    out, err = io.StringIO(), io.StringIO()
    settings = make_settings(ollama_url="http://pi.local:11434")
    assert check(settings, out, err, transport=httpx.MockTransport(stuck)) == 1
    assert err.getvalue().splitlines()[-1] == (
        "ollama at http://pi.local:11434 did not answer within 10 s: check that it is not stuck "
        "(`journalctl -u ollama`) and that the machine is not out of memory"
    )


def test_a_broken_agent_file_is_a_problem_and_the_rest_is_still_checked(
    make_settings: MakeSettings, fake_ollama: FakeModel, prompts_dir: Path
) -> None:
    (prompts_dir / "broken.md").write_text("---\nmodel: x\n")
    code, report, problems = run_check(make_settings())
    assert code == 1
    assert problems == [
        f"{prompts_dir / 'broken.md'}: the front matter opened by '---' is never closed: fix that file, "
        f"or move it out of {prompts_dir}"
    ]
    assert "Model server: ollama 0.12.0" in report


def test_a_sqlite_store_is_reached(make_settings: MakeSettings, fake_ollama: FakeModel, tmp_path: Path) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    url = f"sqlite:///{tmp_path}/piagent.db"
    code, report, _ = run_check(make_settings(memory_url=url))
    assert code == 0
    assert f"Memory store: sqlite at {url}, reachable" in report


def test_a_redis_that_is_down_is_one_line_with_the_fix(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    closed = free_socket()
    url = f"redis://:hunter2@127.0.0.1:{closed.getsockname()[1]}/0"
    try:
        code, report, problems = run_check(make_settings(memory_url=url, connect_timeout=1.0))
    finally:
        closed.close()
    assert code == 1
    assert len(problems) == 1
    assert problems[0].startswith("memory store 'redis' is unavailable")
    assert problems[0].endswith(": start redis, or change PIAGENT_MEMORY_URL")
    assert "hunter2" not in report + "".join(problems)
    assert f"Memory store: redis at redis://:{MASK}@127.0.0.1:" in report


def test_memory_off_is_reported(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    code, report, _ = run_check(make_settings(memory_enabled=False))
    assert code == 0
    assert "Memory: off (PIAGENT_MEMORY_ENABLED=false)" in report


def test_a_password_in_the_upstream_url_is_never_printed(make_settings: MakeSettings, fake_ollama: FakeModel) -> None:
    fake_ollama.models = ["test-model", "pirate-model"]
    url = fake_ollama.url.replace("http://", "http://pi:hunter2@")
    code, report, _ = run_check(make_settings(ollama_url=url))
    assert code == 0
    assert "hunter2" not in report
    assert f"PIAGENT_OLLAMA_URL=http://pi:{MASK}@127.0.0.1" in report


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        pytest.param("PIAGENT_API_KEYS", "k1,k2", MASK, id="api-keys"),
        pytest.param("PIAGENT_OPENAI_API_KEY", "sk-123", MASK, id="openai-key"),
        pytest.param("PIAGENT_SOME_TOKEN", "t", MASK, id="token"),
        pytest.param("PIAGENT_DB_PASSWORD", "p", MASK, id="password"),
        pytest.param("PIAGENT_CLIENT_SECRET", "s", MASK, id="secret"),
        pytest.param("PIAGENT_API_KEYS", "", "", id="empty-stays-empty"),
        pytest.param("PIAGENT_KEEP_ALIVE", "10m", "10m", id="not-a-secret"),
        pytest.param(
            "PIAGENT_MEMORY_URL", "redis://:pw@pi.local:6379/0", f"redis://:{MASK}@pi.local:6379/0", id="url-pw"
        ),
        pytest.param("PIAGENT_OLLAMA_URL", "https://tok@a.local", f"https://{MASK}@a.local", id="url-token-user"),
        pytest.param(
            "PIAGENT_OLLAMA_URL",
            "http://u:p@a:1,http://b:2",
            f"http://u:{MASK}@a:1,http://b:2",
            id="url-list",
        ),
        pytest.param("PIAGENT_OLLAMA_URL", "http://127.0.0.1:11434", "http://127.0.0.1:11434", id="plain-url"),
    ],
)
def test_secrets_are_masked(name: str, value: str, shown: str) -> None:
    assert mask_secret(name, value) == shown


def test_the_command_exits_non_zero_on_a_closed_port(prompts_dir: Path, tmp_path: Path) -> None:
    closed = free_socket()
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    env.update(PIAGENT_PROMPTS_DIR=str(prompts_dir), PIAGENT_OLLAMA_URL=url)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "piagent", "check"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        closed.close()
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "",
        "1 problem:",
        f"ollama is not reachable at {url}: start it with `ollama serve` or set PIAGENT_OLLAMA_URL",
    ]
    assert "  PIAGENT_OLLAMA_URL=" + url in result.stdout.splitlines()


def test_the_command_refuses_a_wrong_setting_in_one_line(prompts_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    env.update(PIAGENT_PROMPTS_DIR=str(prompts_dir), PIAGENT_PORT="eighty")
    result = subprocess.run(
        [sys.executable, "-m", "piagent", "check"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr == "piagent: PIAGENT_PORT='eighty' is not allowed: expected an integer from 1 to 65535\n"


@pytest.fixture
def openai_agent(prompts_dir: Path) -> Iterator[FakeModel]:
    """A third agent, `llama`, on a fake OpenAI-compatible server that wants a key."""
    with FakeModel(models=["fake-model"]) as fake:
        fake.api_key = "sk-check"
        (prompts_dir / "llama.md").write_text(
            f"---\nprovider: openai\nurl: {fake.url}\nmodel: fake-model\napi_key_env: CHECK_LLAMA_KEY\n---\nHi\n",
            encoding="utf-8",
        )
        yield fake


def test_an_openai_agent_is_checked_on_its_own_server_and_not_looked_for_in_ollama(
    make_settings: MakeSettings, fake_ollama: FakeModel, openai_agent: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_LLAMA_KEY", "sk-check")
    fake_ollama.models = ["test-model", "pirate-model"]
    code, report, problems = run_check(make_settings())
    assert (code, problems) == (0, [])
    lines = report.splitlines()
    assert "  llama    fake-model  (openai)" in lines
    assert f"Model server: openai-compatible at {openai_agent.url}, serving fake-model" in lines
    assert "  fake-model: listed" in lines
    assert [r.path for r in openai_agent.requests] == ["/v1/models"]
    assert "fake-model" not in [line.split(":")[0].strip() for line in lines if line.endswith("not pulled")]


def test_an_openai_server_that_is_down_or_a_missing_key_is_a_problem_with_its_fix(
    make_settings: MakeSettings, fake_ollama: FakeModel, openai_agent: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, problems = run_check(make_settings())
    assert problems == [
        "agent 'llama': api_key_env names CHECK_LLAMA_KEY, which is not set in the environment: "
        "export it before starting piagent, or remove api_key_env"
    ]
    monkeypatch.setenv("CHECK_LLAMA_KEY", "sk-check")
    fake_ollama.models = ["test-model", "pirate-model"]
    openai_agent.stop()
    code, report, problems = run_check(make_settings())
    assert code == 1
    assert problems == [
        f"the OpenAI-compatible server is not reachable at {openai_agent.url}: start it (llama-server, LM Studio, "
        "vLLM, ...) or fix `url:` of agent 'llama'"
    ]
    assert "Model server: ollama 0.12.0 at " + fake_ollama.url in report


def test_the_start_up_check_asks_through_the_servers_own_client_and_leaves_it_open(
    serve_full: Callable[..., Any], fake_ollama: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    fake_ollama.models = ["pirate-model"]
    with serve_full() as served:
        runtime = served.runtime
        with caplog.at_level(logging.WARNING, logger="piagent.check"):
            served.call(lambda: warn_upstream(runtime.settings, runtime))
        assert [r.path for r in fake_ollama.requests] == ["/api/version", "/api/tags"]
        assert runtime.client is not None
        assert not runtime.client.is_closed
        assert httpx.get(f"{served.url}/health").status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        "model 'test-model' of agent 'general' is not pulled: run `ollama pull test-model` (`piagent check` says more)"
    ]
