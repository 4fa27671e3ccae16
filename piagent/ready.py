"""Reading an async generator's items that are ready now, without waiting, so a burst leaves in one write.

A reply's tokens that arrive in one upstream read are all ready at once: the provider splits them out of bytes
already received. Relayed one `send` each, a burst costs a socket write per token (about a third of the relay's
CPU). `ReadySource` starts each step of the generator by hand: a step that finishes without suspending gave an
item that was ready; one that suspends is kept as it is and finished later by `wait`, exactly as `await` would
have finished it (the same futures go to the event loop, a cancellation is thrown in where it waits). So no item
is ever held back to wait for another, and a step is never started twice.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Coroutine, Generator
from contextlib import suppress
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class _Waiting:
    """The marker `ReadySource.ready` returns when the next item is not there yet."""

    __slots__ = ()


WAITING = _Waiting()


class _Rest(Generic[T]):
    """The rest of a step started by hand: hands each future it waits on to the event loop, as `await` does."""

    __slots__ = ("_step", "_throw", "_waiting")

    def __init__(self, step: Coroutine[Any, Any, T], waiting: object, throw: BaseException | None = None) -> None:
        self._step = step
        self._waiting = waiting
        self._throw = throw

    def __await__(self) -> Generator[Any, Any, T]:
        step = self._step
        try:
            waiting = step.throw(self._throw) if self._throw is not None else self._waiting
            while True:
                try:
                    sent = yield waiting
                except GeneratorExit:
                    step.close()
                    raise
                except BaseException as exc:  # a cancellation goes where the step waits, as with `await`
                    waiting = step.throw(exc)
                else:
                    waiting = step.send(sent)
        except StopIteration as done:
            return cast(T, done.value)


class ReadySource(Generic[T]):
    """One async generator read item by item, telling an item that is ready from one that must be waited for."""

    __slots__ = ("_pending", "_source", "_waiting")

    def __init__(self, source: AsyncGenerator[T, None]) -> None:
        self._source = source
        self._pending: Coroutine[Any, Any, T] | None = None
        self._waiting: object = None

    def ready(self) -> T | _Waiting:
        """The next item if the generator has it without waiting, else `WAITING` (then call `wait` next).

        Raises StopAsyncIteration at the end, and whatever the generator raises.
        """
        step = self._source.__anext__()
        try:
            waiting = step.send(None)
        except StopIteration as done:
            return cast(T, done.value)
        self._pending, self._waiting = step, waiting
        return WAITING

    def wait(self) -> Awaitable[T]:
        """The item `ready` had to leave waiting, to await (raises StopAsyncIteration at the end).

        A plain method returning the awaitable, not a coroutine: one frame less on every resume of a trickle.
        """
        step, self._pending = self._pending, None
        assert step is not None, "wait() follows a ready() that returned WAITING"
        return _Rest(step, self._waiting)

    async def abandon(self, exc: BaseException) -> None:
        """Unwind a step left waiting by throwing `exc` in where it waits (as a cancellation would arrive), so the
        generator can be closed; what it raises is dropped, since the caller re-raises `exc`."""
        step, self._pending = self._pending, None
        if step is None:
            return
        with suppress(BaseException):  # the caller re-raises the exception that got us here
            await _Rest(step, None, exc)
