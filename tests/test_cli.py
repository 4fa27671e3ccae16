"""The `piagent` command and `python -m piagent`: serve with an access log, list agents, refuse bad settings."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from bench.fakemodel import FakeModel
from piagent.version import __version__
from tests.servers import free_port, start_piagent, wait_until_serving


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "piagent", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )


def base_env(prompts_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
    env["PIAGENT_PROMPTS_DIR"] = str(prompts_dir)
    # Off unless a test is about it: its requests to the model server would count among the test's own.
    env["PIAGENT_STARTUP_CHECK"] = "false"
    env.update(extra)
    return env


def test_serve_answers_and_logs_one_line_per_request_without_the_content(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    port = free_port()
    key = "alpha-0123456789-abcdefghij"
    env = base_env(prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=fake_ollama.url, PIAGENT_API_KEYS=key)
    process = start_piagent(env, tmp_path)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        headers = {"Authorization": f"Bearer {key}"}
        reply = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "secret words"}, headers=headers)
        assert reply.json()["reply"] == "Hello, world!"
        wrong = {"Authorization": "Bearer wrong-key-0123456789-xyz"}
        assert httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "x"}, headers=wrong).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    # uvicorn re-raises the signal it caught once shut down cleanly, as process managers expect.
    assert process.returncode == -signal.SIGTERM
    assert "Application shutdown complete." in output
    assert '"GET /health HTTP/1.1" 200' in output
    assert output.count('"POST /chat HTTP/1.1" 200') == 1
    assert output.count('"POST /chat HTTP/1.1" 401') == 1
    assert key not in output
    assert "wrong-key-0123456789-xyz" not in output
    assert "secret words" not in output
    assert "Hello, world!" not in output


def test_serving_without_a_model_server_logs_what_check_would_say_and_serves_anyway(
    prompts_dir: Path, tmp_path: Path
) -> None:
    port, closed = free_port(), free_port()
    env = base_env(
        prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=f"http://127.0.0.1:{closed}", PIAGENT_STARTUP_CHECK="1"
    )
    process = start_piagent(env, tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True)
    reader.start()
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        seen = []
        while not any("not reachable" in line for line in seen):
            seen.append(lines.get(timeout=30))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        reader.join(timeout=5)
        process.stdout.close()
    warning = next(line for line in seen if "not reachable" in line)
    assert warning.startswith("WARNING:")
    assert f"ollama is not reachable at http://127.0.0.1:{closed}: start it with `ollama serve`" in warning
    assert "`piagent check` says more" in warning


def test_version_prints_the_version(prompts_dir: Path, tmp_path: Path) -> None:
    result = run_cli("--version", env=base_env(prompts_dir), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"piagent {__version__}\n"


def test_a_wrong_setting_stops_start_up_with_one_line(prompts_dir: Path, tmp_path: Path) -> None:
    result = run_cli(env=base_env(prompts_dir, PIAGENT_PORT="eighty"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "piagent: PIAGENT_PORT='eighty' is not allowed: expected an integer from 1 to 65535\n"


def test_a_broken_agent_file_stops_start_up_naming_it(prompts_dir: Path, tmp_path: Path) -> None:
    (prompts_dir / "broken.md").write_text("---\nmodel: x\n")
    result = run_cli(env=base_env(prompts_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "broken.md: the front matter opened by '---' is never closed" in result.stderr


def test_agents_lists_each_agent(prompts_dir: Path, tmp_path: Path) -> None:
    result = run_cli("agents", env=base_env(prompts_dir), cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["general", "qwen2.5:0.5b", "(default)"]
    assert lines[1].split()[:3] == ["pirate", "pirate-model", "Talks"]


def test_config_prints_the_resolved_settings(prompts_dir: Path, tmp_path: Path) -> None:
    key = "alpha-0123456789-abcdefghij"
    result = run_cli("config", env=base_env(prompts_dir, PIAGENT_MODEL="tiny", PIAGENT_API_KEYS=key), cwd=tmp_path)
    assert result.returncode == 0
    assert "PIAGENT_MODEL=tiny" in result.stdout.splitlines()
    assert "PIAGENT_API_KEYS=***" in result.stdout.splitlines()
    assert key not in result.stdout


def test_serves_without_httptools_and_uvloop_as_on_a_pi_without_their_wheels(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=fake_ollama.url)
    # None in sys.modules makes an import fail, as if the package had never been installed.
    without = (
        "import sys; sys.modules['uvloop'] = None; sys.modules['httptools'] = None; "
        "from piagent.cli import main; raise SystemExit(main())"
    )
    process = start_piagent(env, tmp_path, argv=("-c", without))
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process)
        with httpx.stream(
            "POST", f"http://127.0.0.1:{port}/chat", json={"message": "hi", "stream": True}, timeout=10
        ) as response:
            assert response.status_code == 200
            assert "".join(response.iter_text()) == "Hello, world!"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert "Application startup complete." in output
