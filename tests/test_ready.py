"""Reading a generator's ready items by hand: a step that must wait is finished as `await` would finish it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from piagent.ready import WAITING, ReadySource


async def _source(gate: asyncio.Event, log: list[str]) -> AsyncGenerator[str, None]:
    try:
        yield "a"
        yield "b"
        await gate.wait()
        yield "c"
    finally:
        log.append("closed")


def test_ready_items_come_at_once_and_a_waiting_one_after_its_wait() -> None:
    async def main() -> list[object]:
        gate, log = asyncio.Event(), []
        source = ReadySource(_source(gate, log))
        seen: list[object] = [source.ready(), source.ready(), source.ready()]
        asyncio.get_running_loop().call_later(0.01, gate.set)
        seen.append(await source.wait())
        with pytest.raises(StopAsyncIteration):
            source.ready()
        return [*seen, *log]

    assert asyncio.run(main()) == ["a", "b", WAITING, "c", "closed"]


def test_a_step_left_waiting_is_unwound_by_abandon_so_the_generator_closes() -> None:
    async def main() -> list[str]:
        gate, log = asyncio.Event(), []
        replies = _source(gate, log)
        source = ReadySource(replies)
        assert [source.ready(), source.ready(), source.ready()] == ["a", "b", WAITING]
        await source.abandon(asyncio.CancelledError())  # as when the client leaves during a write
        await replies.aclose()  # no "already running": the step is over
        return log

    assert asyncio.run(main()) == ["closed"]


def test_a_cancellation_while_waiting_reaches_the_generator() -> None:
    async def main() -> list[str]:
        gate, log = asyncio.Event(), []
        source = ReadySource(_source(gate, log))
        source.ready(), source.ready(), source.ready()

        async def waiting() -> object:
            return await source.wait()

        task = asyncio.create_task(waiting())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert asyncio.run(main()) == ["closed"]
