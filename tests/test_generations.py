"""The generation limiter on its own: slots, the bounded FIFO queue, leaving it, Retry-After and draining."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from piagent.exceptions import Busy, ShuttingDown
from piagent.generations import GenerationLimiter

pytestmark = pytest.mark.anyio


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let every task that can run, run (a few scheduler rounds, no wall-clock wait)."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


async def test_free_slots_are_taken_at_once_and_given_back() -> None:
    limiter = GenerationLimiter(max_active=2, max_waiting=0)
    first = await limiter.acquire()
    await limiter.acquire()
    assert (limiter.active, limiter.waiting) == (2, 0)
    limiter.release(first)
    limiter.release(first)
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_waiters_get_the_slot_in_arrival_order() -> None:
    limiter = GenerationLimiter(max_active=1, max_waiting=3)
    held = await limiter.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        started = await limiter.acquire()
        order.append(n)
        limiter.release(started)

    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(wait, n)
            await settle()
        assert (limiter.active, limiter.waiting) == (1, 3)
        limiter.release(held)
    assert order == [0, 1, 2]
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_past_the_queue_the_answer_is_busy_with_a_retry_after() -> None:
    clock = Clock()
    limiter = GenerationLimiter(max_active=2, max_waiting=1, clock=clock)
    for _ in range(6):  # generations of 20 s teach the average
        started = await limiter.acquire()
        clock.now += 20
        limiter.release(started)
    await limiter.acquire()
    await limiter.acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(limiter.acquire)
        await settle()
        with pytest.raises(Busy) as caught:
            await limiter.acquire()
        group.cancel_scope.cancel()
    assert caught.value.status_code == 503
    assert caught.value.code == "busy"
    # One generation's time (about 20 s after six of them) per slot: a queue place frees in about 10 s.
    assert caught.value.headers == {"Retry-After": str(limiter.retry_after())}
    assert 8 <= limiter.retry_after() <= 10
    assert "2 generating and 1 waiting" in caught.value.message


async def test_retry_after_stays_between_one_and_sixty_seconds() -> None:
    clock = Clock()
    limiter = GenerationLimiter(max_active=1, max_waiting=1, clock=clock)
    for hold in (0.0, 10_000.0):
        for _ in range(40):
            started = await limiter.acquire()
            clock.now += hold
            limiter.release(started)
        assert limiter.retry_after() == (1 if hold == 0.0 else 60)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter = GenerationLimiter(max_active=1, max_waiting=2)
    held = await limiter.acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(limiter.acquire)
        await settle()
        assert limiter.waiting == 1
        group.cancel_scope.cancel()
    assert (limiter.active, limiter.waiting) == (1, 0)
    limiter.release(held)
    assert limiter.active == 0


async def test_a_waiter_cancelled_just_as_it_was_handed_the_slot_passes_it_on() -> None:
    limiter = GenerationLimiter(max_active=1, max_waiting=2)
    held = await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    await settle()
    second = asyncio.create_task(limiter.acquire())
    await settle()
    limiter.release(held)  # handed to the first waiter...
    first.cancel()  # ...which is cancelled before it could run (as a server's shutdown timeout does)
    with pytest.raises(asyncio.CancelledError):
        await first
    started = await asyncio.wait_for(second, timeout=5)
    assert (limiter.active, limiter.waiting) == (1, 0)
    limiter.release(started)
    assert limiter.active == 0


async def test_draining_refuses_the_queue_and_new_requests_and_waits_for_the_running() -> None:
    limiter = GenerationLimiter(max_active=1, max_waiting=4)
    held = await limiter.acquire()
    refused: list[str] = []

    async def queued() -> None:
        with pytest.raises(ShuttingDown):
            await limiter.acquire()
        refused.append("queued")

    async with anyio.create_task_group() as group:
        group.start_soon(queued)
        await settle()
        group.start_soon(limiter.drain, 30.0)
        await settle()
        assert refused == ["queued"]
        with pytest.raises(ShuttingDown):
            await limiter.acquire()
        assert not limiter.halted
        limiter.release(held)  # the running generation finishes within the grace period: drain returns
    assert not limiter.halted
    assert limiter.active == 0


async def test_after_the_grace_period_the_watched_generations_are_cancelled() -> None:
    limiter = GenerationLimiter(max_active=2, max_waiting=0)
    ended: list[str] = []

    async def generation() -> None:
        started = await limiter.acquire()
        try:
            with anyio.CancelScope() as scope:
                limiter.watch(scope)
                await anyio.sleep_forever()
            ended.append("halted" if scope.cancelled_caught else "finished")
        finally:
            limiter.unwatch(scope)
            limiter.release(started)

    async with anyio.create_task_group() as group:
        group.start_soon(generation)
        group.start_soon(generation)
        await settle()
        with anyio.fail_after(5):
            await limiter.drain(0.01)
            await limiter.drain(0)  # a second drain (the lifespan's) finds nothing left to do
    assert ended == ["halted", "halted"]
    assert limiter.halted
    assert limiter.active == 0


async def test_a_scope_watched_after_the_halt_is_cancelled_at_once() -> None:
    limiter = GenerationLimiter(max_active=1, max_waiting=0)
    limiter.halt()
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        limiter.watch(scope)
        await anyio.sleep_forever()
    assert scope.cancelled_caught
