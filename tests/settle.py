"""After a request, however it ended: nothing of it may be left behind on the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from bench.fakemodel import FakeModel
from piagent.transport import HTTPToolsTransport
from tests.servers import Served


class Leftovers(NamedTuple):
    """What a finished request could leave behind on the server."""

    active: int  # generation slots still held
    waiting: int  # requests still queued for a slot
    busy_connections: int  # upstream connections in use
    idle_connections: int  # upstream connections pooled for reuse
    pending: int  # requests waiting for an upstream connection
    tasks: frozenset[str]  # tasks on the server's loop beyond those it started with


def _describe(task: asyncio.Task[Any]) -> str:
    return f"{task.get_name()}: {task.get_coro()!r}"


def baseline_tasks(served: Served) -> frozenset[int]:
    """Ids of the tasks running on an idle server (uvicorn's own)."""

    async def snapshot() -> frozenset[int]:
        return frozenset(id(task) for task in asyncio.all_tasks() if task is not asyncio.current_task())

    return served.call(snapshot)


def leftovers(served: Served, baseline: frozenset[int]) -> Leftovers:
    """One look at the limiter, the shared client's pool and the loop's tasks, taken on the server's loop."""

    async def snapshot() -> Leftovers:
        runtime = served.runtime
        limiter = runtime.chat.limiter
        assert limiter is not None
        transport = runtime.client._transport  # type: ignore[union-attr]
        if isinstance(transport, HTTPToolsTransport):  # piagent's own transport (plain-http upstreams)
            pool = transport._pool
            open_, idle, pending = transport.connections, transport.idle_connections, len(pool._waiters)
        else:  # httpx's default, httpcore's pool
            pool = transport._pool
            connections = [c for c in pool.connections if not c.is_closed()]
            open_, idle, pending = len(connections), sum(1 for c in connections if c.is_idle()), len(pool._requests)
        tasks = frozenset(
            _describe(task)
            for task in asyncio.all_tasks()
            if task is not asyncio.current_task() and id(task) not in baseline
        )
        return Leftovers(limiter.active, limiter.waiting, open_ - idle, idle, pending, tasks)

    return served.call(snapshot)


def assert_settled(
    served: Served, baseline: frozenset[int], fake: FakeModel | None = None, timeout: float = 3.0
) -> None:
    """Wait until no slot, queue place, upstream connection in use or task is left; the fake agrees."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(served, baseline)
        clean = left.active == left.waiting == left.busy_connections == left.pending == 0 and not left.tasks
        if clean and (fake is None or fake.open_connections == left.idle_connections):
            return
        if time.monotonic() > deadline:
            opened = None if fake is None else fake.open_connections
            raise AssertionError(f"left behind: {left}; connections the fake Ollama sees open: {opened}")
        time.sleep(0.02)
