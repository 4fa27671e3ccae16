"""Back-pressure for the model: a few generations at once, a bounded queue behind them, and draining.

A Pi's model server generates for one or two requests at a time; anything more only waits inside it
while its first-token clock runs. So the chat service takes a slot here for every generation: a free
slot starts at once, a full house waits in a bounded FIFO queue, and past the queue the answer is
503 `busy` with a Retry-After. A waiter whose request is cancelled (its client left) leaves the queue.
A waiter can also be woken each time the queue moves up (`wait(ticket, moves=True)`), to tell its
client its place (the `queued` stream event).

Draining (graceful shutdown) closes the door, refuses the queue, gives the running generations a grace
period and then halts them: each HTTP consumer registers the cancel scope it already has (the one
that watches for its client leaving), so halting costs nothing per token.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import anyio

from piagent.exceptions import Busy, ShuttingDown

# How long, at most, halted generations get to unwind (store their partial reply, send their error event).
_UNWIND_SECONDS = 5.0


class Ticket:
    """A generation's claim: a slot (`granted`) or a place in the queue."""

    __slots__ = ("event", "granted", "moves")

    def __init__(self, granted: bool = False) -> None:
        self.event = anyio.Event()
        self.granted = granted
        self.moves = False  # wake on every move up the queue, not only when granted


class GenerationLimiter:
    """At most `max_active` generations at once and `max_waiting` queued; drained on shutdown."""

    def __init__(
        self,
        max_active: int,
        max_waiting: int,
        clock: Callable[[], float] = time.monotonic,
        admit: Callable[[], None] | None = None,
    ) -> None:
        self.max_active = max_active
        self.max_waiting = max_waiting
        self._clock = clock
        # Asked before a generation takes a slot or a queue place; raises to refuse it (piagent.hardware).
        self._admit = admit
        self._active = 0
        self._waiters: deque[Ticket] = deque()
        self._closed = False
        self._halted = False
        self._scopes: set[anyio.CancelScope] = set()
        self._idle: anyio.Event | None = None
        # A running average of how long a generation holds its slot, for an honest Retry-After.
        self._average_hold = 5.0

    @property
    def active(self) -> int:
        """Generations running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Generations queued for a slot."""
        return len(self._waiters)

    @property
    def halted(self) -> bool:
        """True once draining has ended the generations that outlived the grace period."""
        return self._halted

    def retry_after(self) -> int:
        """Seconds until a queue place is likely to free: one generation's time per slot, 1 to 60."""
        return min(60, max(1, math.ceil(self._average_hold / self.max_active)))

    async def acquire(self) -> float:
        """Take a slot, waiting in the queue if need be; returns the start time to hand to `release`.

        Raises `Busy` when the queue is full, `ShuttingDown` once draining has begun, and whatever `admit`
        raises (LowMemory, TooHot) when the machine cannot take a generation now.
        """
        ticket = self.enter()
        try:
            await self.wait(ticket)
        except BaseException:
            self.leave(ticket)
            raise
        return self._clock()

    def enter(self) -> Ticket:
        """A slot at once, or a place at the end of the queue; raises as `acquire` does when there is neither.

        Whoever enters waits with `wait`, and calls `leave` if it stops waiting (cancelled) before `release`.
        """
        if self._closed:
            raise ShuttingDown("piagent is shutting down and starts no new generation")
        if self._admit is not None:
            self._admit()
        if self._active < self.max_active and not self._waiters:
            self._active += 1
            return Ticket(granted=True)
        if len(self._waiters) >= self.max_waiting:
            seconds = self.retry_after()
            raise Busy(
                f"the model is busy: {self._active} generating and {len(self._waiters)} waiting; "
                f"retry in about {seconds} s",
                seconds,
            )
        ticket = Ticket()
        self._waiters.append(ticket)
        return ticket

    def ahead(self, ticket: Ticket) -> int:
        """How many generations are queued before this ticket's (0: it is next)."""
        return self._waiters.index(ticket)

    async def wait(self, ticket: Ticket, moves: bool = False) -> int | None:
        """None once the ticket holds a slot; with `moves`, the new count `ahead` as soon as the queue moves up.

        Raises `ShuttingDown` when draining refuses the queue.
        """
        while not ticket.granted:
            ticket.moves = moves
            await ticket.event.wait()
            if ticket.granted:
                break
            if ticket not in self._waiters:  # refused by draining
                raise ShuttingDown("piagent is shutting down and starts no new generation")
            ticket.event = anyio.Event()
            return self.ahead(ticket)
        return None

    def leave(self, ticket: Ticket) -> None:
        """Give up a ticket whose wait was cancelled: out of the queue, or pass on the slot just handed over."""
        if ticket.granted:
            self.release(self._clock())
        elif ticket in self._waiters:
            index = self._waiters.index(ticket)
            del self._waiters[index]
            self._moved(index)

    def now(self) -> float:
        """The limiter's clock: the start time to hand to `release` for a ticket that `wait` granted."""
        return self._clock()

    def _moved(self, start: int) -> None:
        # Wake the waiters from `start` on that follow their place; a queue is at most PIAGENT_MAX_QUEUE long.
        for index in range(start, len(self._waiters)):
            ticket = self._waiters[index]
            if ticket.moves:
                ticket.event.set()

    def release(self, started: float) -> None:
        """Give back the slot taken at `started`: to the first waiter, or to the pool."""
        self._average_hold += (self._clock() - started - self._average_hold) * 0.2
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True  # the slot moves to the waiter: `_active` stays the same
            waiter.event.set()
            self._moved(0)
            return
        self._active -= 1
        if self._active == 0 and self._idle is not None:
            self._idle.set()

    def watch(self, scope: anyio.CancelScope) -> None:
        """Cancel `scope` when generations are halted (at once, if they already are)."""
        if self._halted:
            scope.cancel()
        self._scopes.add(scope)

    def unwatch(self, scope: anyio.CancelScope) -> None:
        """Stop watching `scope` (its generation is over)."""
        self._scopes.discard(scope)

    def halt(self) -> None:
        """End every running generation now: each watched scope is cancelled; none starts any more."""
        self._closed = True
        self._halted = True
        self._refuse_waiters()
        for scope in list(self._scopes):
            scope.cancel()

    async def drain(self, grace: float) -> None:
        """Refuse new and queued generations, wait up to `grace` s for the running ones, then halt them."""
        self._closed = True
        self._refuse_waiters()
        with anyio.move_on_after(grace):
            await self._idle_event().wait()
        if self._active:
            self.halt()
            with anyio.move_on_after(_UNWIND_SECONDS):
                await self._idle_event().wait()

    def _idle_event(self) -> anyio.Event:
        if self._idle is None:
            self._idle = anyio.Event()
        if self._active == 0:
            self._idle.set()
        return self._idle

    def _refuse_waiters(self) -> None:
        while self._waiters:
            self._waiters.popleft().event.set()  # not granted: the waiter raises ShuttingDown
