"""Helpers for the MCP tests: an event loop in a thread (so one server serves several tests) and process checks."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from piagent.mcp import McpLimits, ServerConfig

T = TypeVar("T")
# piagent serves on uvloop where it is installed, whose subprocess transport is its own: the MCP tests run
# on both loops.
BOTH_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")],
)
TESTS = Path(__file__).resolve().parent
SERVER_COMMAND = [sys.executable, str(TESTS / "mcp_server.py")]
# Generous for starting (a Python MCP server imports pydantic: seconds on a busy 2-core machine), short
# for restarts, so no test waits long.
LIMITS = McpLimits(timeout=10, start_timeout=30, restart_min=0.05, restart_max=0.4)


def stdio_config(name: str = "t", command: list[str] | None = None, **extra: Any) -> ServerConfig:
    """A stdio server running the real test server, or `command`."""
    return ServerConfig(name=name, command=command or SERVER_COMMAND, **extra)


def fake_config(mode: str, name: str = "bad") -> ServerConfig:
    """A stdio server that misbehaves as `mode` says (tests/mcp_fake.py)."""
    return ServerConfig(name=name, command=[sys.executable, str(TESTS / "mcp_fake.py"), mode])


class LoopThread:
    """An asyncio loop running in its own thread; `run` hands it a coroutine and waits for the result."""

    def __init__(self, use_uvloop: bool = False) -> None:
        self.loop = uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes whose process group is `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command (which may hold spaces and parentheses): state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
