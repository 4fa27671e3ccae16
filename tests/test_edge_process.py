"""The edge limits in a real `python -m piagent`: a lowered open-file limit, and the memory a header flood costs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.fakemodel import FakeModel
from piagent.server import SPARE_DESCRIPTORS
from tests.servers import free_port, wait_until_serving
from tests.test_cli import base_env
from tests.test_edge import flood

NOFILE = 64


@contextmanager
def piagent_process(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """`argv` (ending in `python -m piagent`) as a process, killed at the end; its output is kept."""
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.communicate(timeout=10)


def status_or_error(url: str) -> int | str:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")
def test_with_more_half_sent_heads_than_descriptors_health_answers_again_within_the_head_timeout(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=fake_ollama.url, PIAGENT_HEADER_TIMEOUT="1")
    argv = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--", sys.executable, "-m", "piagent"]
    attackers: list[socket.socket] = []
    with piagent_process(argv, env, tmp_path) as process:
        wait_until_serving(url, process)
        try:
            for _ in range(NOFILE * 3):
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
                except OSError:
                    continue
                attackers.append(sock)
            attacked = time.monotonic()
            assert status_or_error(url) != 200  # everyone is locked out for now
            while status_or_error(url) != 200:
                assert time.monotonic() - attacked < 5, "still locked out"
                time.sleep(0.05)
            recovered = time.monotonic() - attacked
            # The server closed every attacker (408 for the held ones, 503 for those past the cap).
            for sock in attackers:
                sock.settimeout(5)
                assert sock.recv(65536).startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 "))
        finally:
            for sock in attackers:
                sock.close()
        assert process.poll() is None
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert recovered < 1 + 1.5
    assert len(attackers) == NOFILE * 3  # every connection was accepted: the process never ran out of descriptors
    cap = NOFILE - 16 - SPARE_DESCRIPTORS
    assert f"PIAGENT_MAX_OPEN_CONNECTIONS=512 lowered to {cap} to fit the open-file limit ({NOFILE})" in output
    assert "Traceback" not in output


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_flood_of_150_mb_headers_costs_at_most_16_mib_and_health_keeps_answering(
    prompts_dir: Path, fake_ollama: FakeModel, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(prompts_dir, PIAGENT_PORT=str(port), PIAGENT_OLLAMA_URL=fake_ollama.url, PIAGENT_ACCESS_LOG="false")
    with piagent_process([sys.executable, "-m", "piagent"], env, tmp_path) as process, httpx.Client() as client:
        wait_until_serving(url, process)
        for _ in range(50):
            client.get(f"{url}/health")
        idle = memory_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        stop = threading.Event()
        sent: list[int] = []
        flooders = [threading.Thread(target=flood, args=(port, stop, 150 * 1024 * 1024, sent)) for _ in range(4)]
        for thread in flooders:
            thread.start()
        slowest = 0.0
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                started = time.monotonic()
                assert client.get(f"{url}/health", timeout=5).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.02)
        finally:
            stop.set()
            for thread in flooders:
                thread.join(timeout=10)
        peak = memory_kib(process.pid, "VmHWM")
    print(
        f"idle RSS {idle / 1024:.1f} MiB, peak under the flood {peak / 1024:.1f} MiB, slowest /health {slowest:.3f} s"
    )
    assert len(sent) > 8
    assert peak - idle <= 16 * 1024
    assert slowest < 0.5
