"""Benchmark the per-token relay path of every protocol pair: upstream (Ollama NDJSON, OpenAI SSE) to front
door (/chat plain text, /v1/chat/completions SSE, /api/chat NDJSON).

``python bench/protocols.py`` (``--quick`` for a smoke run) starts, per scenario, piagent under uvicorn pinned to
core 1 and the fake model server (``bench/fake_model.py``) pinned to core 0; this process (pinned to core 0 too)
keeps ``--clients`` streams of ``--tokens``-token replies going and reads them with raw sockets. The fake sends each
reply whole in one write, so the figures are piagent's cost: parsing the upstream's lines, the chat service, one
write per token to the client. Two figures per scenario: tokens relayed per second of wall time (bounded by core 0
when the load generator saturates it), and tokens per second of piagent's own CPU time (utime + stime from /proc),
which is what one core can relay; the target is 40,000. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# Another checkout's piagent can be measured the same way (e.g. the main branch, for a before/after).
SERVER_ROOT = Path(os.environ.get("BENCH_SERVER_ROOT", ROOT))
TARGET = 40_000


class Scenario(NamedTuple):
    upstream: str  # "ollama" or "openai"
    door: str  # "chat", "openai", "ollama"


SCENARIOS = [
    Scenario("ollama", "chat"),
    Scenario("openai", "chat"),
    Scenario("ollama", "openai"),
    Scenario("openai", "openai"),
    Scenario("ollama", "ollama"),
    Scenario("openai", "ollama"),
]


# ------------------------------------------------------------------ the load generator


def _request(door: str, port: int) -> bytes:
    if door == "chat":
        path, body = "/chat", {"message": "hi", "stream": True}
    elif door == "openai":
        path, body = (
            "/v1/chat/completions",
            {"model": "general", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        )
    else:
        path, body = "/api/chat", {"model": "general", "messages": [{"role": "user", "content": "hi"}]}
    payload = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def _client(port: int, request: bytes, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            # Chunked body: read until the zero-length chunk; count nothing but the replies.
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
            counts[0] += 1
    finally:
        writer.close()


async def _load(port: int, door: str, clients: int, seconds: float) -> int:
    request = _request(door, port)
    counts = [0]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, request, deadline, counts) for _ in range(clients)))
    return counts[0]


# ------------------------------------------------------------------ orchestration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def _pinned(core: str, command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    prefix = ["taskset", "-c", core] if os.cpu_count() and os.cpu_count() >= 2 else []  # type: ignore[operator]
    return subprocess.Popen(prefix + command, **kwargs)  # type: ignore[call-overload,no-any-return]


def run(scenario: Scenario, tokens: int, clients: int, seconds: float, warmup: float) -> dict[str, float]:
    fake_port, port = _free_port(), _free_port()
    # The fake model server (both protocols) sends each reply whole, in one write with a Content-Length.
    fake_argv = [sys.executable, str(ROOT / "bench" / "fake_model.py"), "--port", str(fake_port)]
    fake_argv += ["--force-tokens", str(tokens), "--content-length", "--word", "tok "]
    fake = _pinned("0", fake_argv, stdout=subprocess.DEVNULL)
    prompts = Path(tempfile.mkdtemp())
    url_line = "" if scenario.upstream == "ollama" else f"provider: openai\nurl: http://127.0.0.1:{fake_port}\n"
    (prompts / "general.md").write_text(f"---\n{url_line}description: bench\n---\nYou are a benchmark.\n")
    config = prompts.parent / f"{prompts.name}.env"  # empty: the repository's config.env must not apply
    config.write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIAGENT_")} | {
        "PIAGENT_HOST": "127.0.0.1",
        "PIAGENT_PORT": str(port),
        "PIAGENT_OLLAMA_URL": f"http://127.0.0.1:{fake_port}",
        "PIAGENT_PROMPTS_DIR": str(prompts),
        "PIAGENT_MODEL": "bench",
        "PIAGENT_MEMORY_MAX_CONVERSATIONS": "100000",
        "PIAGENT_ACCESS_LOG": "false",
        # Admission limits lifted, as bench/run.py does: this measures the relay, not the queue.
        "PIAGENT_MAX_CONCURRENT": "16",
        "PIAGENT_MAX_QUEUE": "1000",
        "PIAGENT_RATE_LIMIT": "0",
        "PIAGENT_LOG_LEVEL": "warning",
        "PIAGENT_CONFIG": str(config),
    }
    server = _pinned("1", [sys.executable, "-m", "piagent"], env=env, cwd=SERVER_ROOT)
    try:
        _wait_for(fake_port)
        _wait_for(port)
        asyncio.run(_load(port, scenario.door, clients, warmup))
        cpu_before, wall_before = _cpu_seconds(server.pid), time.monotonic()
        replies = asyncio.run(_load(port, scenario.door, clients, seconds))
        cpu = _cpu_seconds(server.pid) - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        for process in (server, fake):
            process.terminate()
            process.wait(timeout=10)
    relayed = replies * tokens
    return {
        "replies": replies,
        "tokens_per_s": relayed / wall,
        "tokens_per_cpu_s": relayed / cpu if cpu else 0.0,
        "cpu": cpu,
        "wall": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loads, for a smoke run")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", action="append", metavar="UPSTREAM:DOOR", help="e.g. ollama:chat (repeatable)")
    args = parser.parse_args()
    seconds, warmup = (2.0, 0.5) if args.quick else (args.seconds, 2.0)
    print(f"{args.clients} clients, {args.tokens}-token streamed replies, {seconds:g} s per scenario")
    print(f"target: {TARGET:,} tokens/s per core")
    print()
    print("| upstream | front door | replies | tokens/s (wall) | tokens/s per piagent CPU-second | piagent CPU |")
    print("|---|---|---|---|---|---|")
    doors = {"chat": "/chat (plain text)", "openai": "/v1/chat/completions (SSE)", "ollama": "/api/chat (NDJSON)"}
    chosen = [s for s in SCENARIOS if not args.only or f"{s.upstream}:{s.door}" in args.only]
    for scenario in chosen:
        figures = run(scenario, args.tokens, args.clients, seconds, warmup)
        busy = 100 * figures["cpu"] / figures["wall"]
        print(
            f"| {scenario.upstream} | {doors[scenario.door]} | {figures['replies']:,.0f} "
            f"| {figures['tokens_per_s']:,.0f} | {figures['tokens_per_cpu_s']:,.0f} | {busy:.0f} % |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
