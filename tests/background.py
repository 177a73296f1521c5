"""One event loop in a daemon thread, for servers and operators that tests drive from sync code.

The emulated API server, the kopf operator and the local hub each run a coroutine on a loop of
their own, so that synchronous tests, other loops and subprocesses can all talk to them. The
coroutine ``main(ready, stopping)`` sets ``ready`` once it serves and returns soon after
``stopping`` is set; an exception it raises is kept and re-raised by :meth:`start` (before it was
ready) or :meth:`stop` (after).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
Main = Callable[[threading.Event, asyncio.Event], Awaitable[None]]


class BackgroundLoop:
    """``start()``, ``call(...)``, ``stop()``: one coroutine on its own loop in a daemon thread."""

    def __init__(self, main: Main, *, name: str) -> None:
        self._main = main
        self.name = name
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._loop_ready = threading.Event()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self, timeout: float = 10.0) -> None:
        """Run ``main`` until it is ready; raise what it raised if it ended before that."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self.error = None
        self._ready.clear()
        self._loop_ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._loop_ready.wait(timeout)
        while not self._ready.wait(0.05):
            if not self.alive:
                raise RuntimeError(f"{self.name} ended before it was ready") from self.error
            timeout -= 0.05
            if timeout <= 0:
                raise TimeoutError(f"{self.name} was not ready in time")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask ``main`` to return and wait for the thread; re-raise what ``main`` raised."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed already: main ended by itself
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name} did not stop in time")
        self._thread = None
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {self.error!r}") from self.error

    def call(self, fn: Callable[[], T | Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Run ``fn()`` (sync, or returning a coroutine) in the loop and return its result."""
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not running")

        async def runner() -> T:
            result = fn()
            if asyncio.iscoroutine(result):
                return await result  # type: ignore[no-any-return]
            return result  # type: ignore[return-value]

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def guarded() -> None:
            self._stopping = asyncio.Event()
            self._loop_ready.set()
            await self._main(self._ready, self._stopping)

        try:
            loop.run_until_complete(guarded())
        except BaseException as error:
            self.error = error
        finally:
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
