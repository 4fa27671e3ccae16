"""The tool loop's own cost per step, beside a reply without tools measured in the same run.

``python bench/loop.py`` (``--quick`` for a smoke run) measures two figures:

1. In process: `run_loop` driving a scripted provider (no HTTP) through replies of one tool step (the
   `clock` built-in) against the same provider answering at once; the difference per step is the
   loop's own CPU: offering the tools, collecting the call, checking and running the tool under its
   limits, the events, the messages for the next call.
2. End to end: piagent (a real ``python -m piagent``) in front of the fake model server, ``POST /chat``
   to an agent with ``tools: [clock]`` whose model calls it once, beside the same request to an agent
   without tools; piagent's CPU (utime + stime from /proc) per request, and the extra per tool step
   (one more upstream call, the tool, the two events and the stored turns).

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.fakemodel import FakeModel, Script, ToolCall  # noqa: E402
from piagent.loop import LoopLimits, run_loop  # noqa: E402
from piagent.providers.base import Completion, Message  # noqa: E402
from piagent.schemas import ToolCall as WireCall  # noqa: E402
from piagent.settings import Settings  # noqa: E402
from piagent.tools.registry import ToolCatalog  # noqa: E402


class _Provider:
    """Answers from a script at once: a call to `clock` first when `calls` is set, then three tokens."""

    name = "bench"
    upstreams = ()
    tool_choices = frozenset({"auto", "none"})

    def __init__(self, calls: bool) -> None:
        self.calls = calls

    async def stream_chat(
        self, model: str, messages: Any, options: Any, tools: Any = None, output: Any = None
    ) -> AsyncGenerator[Any, None]:
        if self.calls and messages[-1].role != "tool":
            yield WireCall("call_1", "clock", "{}")
        else:
            for token in ("It", " is", " noon."):
                yield token
        yield Completion("stop", 5, 3)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _replies(calls: bool, count: int, tools: dict[str, Any]) -> float:
    provider = _Provider(calls)
    limits = LoopLimits()
    start = _cpu()
    for _ in range(count):
        async for _item in run_loop(provider, "m", [Message("user", "time?")], {}, tools, limits):
            pass
    return (_cpu() - start) / count


def in_process(count: int) -> tuple[float, float]:
    """CPU µs per reply: one tool step, and none."""
    tools = ToolCatalog(Settings()).for_agent("bench", ["clock"])
    with_step = asyncio.run(_replies(True, count, tools))
    without = asyncio.run(_replies(False, count, tools))
    return with_step * 1e6, without * 1e6


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def end_to_end(count: int) -> tuple[float, float]:
    """piagent's CPU µs per /chat request: with one tool step, and without tools."""
    with tempfile.TemporaryDirectory() as tmp, FakeModel(record=False) as fake:
        prompts = Path(tmp)
        (prompts / "plain.md").write_text("You talk.\n")
        (prompts / "acts.md").write_text("---\ntools: [clock]\n---\nYou tell the time.\n")

        def choose(request: Any) -> Script:
            messages = (request.json or {}).get("messages", [])
            if (request.json or {}).get("tools") and messages and messages[-1].get("role") != "tool":
                return Script(tokens=[], tool_calls=[ToolCall("clock", {})])
            return Script(tokens=["It", " is", " noon."])

        fake.choose = choose
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIAGENT_")}
        env.update(
            PIAGENT_PORT=str(port),
            PIAGENT_OLLAMA_URL=fake.url,
            PIAGENT_PROMPTS_DIR=str(prompts),
            PIAGENT_DEFAULT_AGENT="plain",
            PIAGENT_ACCESS_LOG="false",
            PIAGENT_LOG_LEVEL="warning",
            PIAGENT_MEMORY_ENABLED="false",
        )
        server = subprocess.Popen([sys.executable, "-m", "piagent"], cwd=tmp, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(url)
            figures = []
            with httpx.Client(base_url=url, timeout=30) as http:
                for agent in ("acts", "plain"):
                    for _ in range(20):  # warm up
                        http.post("/chat", json={"agent": agent, "message": "time?"})
                    start = _process_cpu(server.pid)
                    for _ in range(count):
                        reply = http.post("/chat", json={"agent": agent, "message": "time?"})
                        assert reply.json()["reply"] == "It is noon.", reply.text
                    figures.append((_process_cpu(server.pid) - start) / count * 1e6)
            return figures[0], figures[1]
        finally:
            server.terminate()
            server.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("piagent did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer replies: a smoke run")
    args = parser.parse_args()
    count = 200 if args.quick else 2000
    with_step, without = in_process(count * 5)
    print(f"in process, CPU per reply: one tool step {with_step:.0f} µs, no tools {without:.0f} µs")
    print(f"  the loop's own cost per step (incl. one more scripted model call): {with_step - without:.0f} µs")
    acts, plain = end_to_end(count // 4)
    print(f"piagent process, CPU per /chat: one tool step {acts:.0f} µs, no tools {plain:.0f} µs")
    print(f"  extra per tool step (one more upstream call, the tool, events): {acts - plain:.0f} µs")
    print(f"  ratio with a step / without: {acts / plain:.2f}x")


if __name__ == "__main__":
    main()
