"""Event loops that finish their tasks before they close: no Orbax coroutine outlives a failed read.

Orbax runs each read (``restore``, ``item_metadata``) on a fresh event loop
(``asyncio_utils.run_sync`` → ``asyncio.new_event_loop()`` → ``run_until_complete`` → ``close``).
Its reads are ``asyncio.gather`` of several tasks; when one fails (a truncated data file), gather
raises at once and the loop is closed while its sibling tasks (other arrays' ``async_deserialize``,
``Store.read`` and the ``_get_array_metadatas`` coroutines it gathers) are still pending. Those tasks
are never run or cancelled; when they are garbage-collected, often at interpreter exit, Python prints
"coroutine '…' was never awaited", "Task was destroyed but it is pending" or "Future exception was
never retrieved", and thread-pool callbacks hit the closed loop ("Event loop is closed").

:func:`draining_event_loops` makes the loops created inside it do on ``close()`` what ``asyncio.run``
does at its end: cancel the pending tasks, run the loop until they have finished (retrieving their
exceptions) and shut the default executor down, then close. Orbax avoids ``asyncio.run`` because its
teardown walks *every* loop's tasks from many threads; here only this loop's tasks are touched.

Cancelling a task does not stop the I/O it was awaiting: a TensorStore read keeps running on its own
threads and, when it finishes, wakes the (cancelled, already finished) task through
``call_soon_threadsafe``. If the loop has closed by then, that call raised "Event loop is closed" in
TensorStore's thread, which printed the traceback. Under load this happened now and then. A draining
loop drops such late wake-ups, since nothing is left to receive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Iterator


class DrainingEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``close()`` first cancels and awaits its own pending tasks."""

    def close(self) -> None:
        if not self.is_closed() and not self.is_running():
            self.drain()
        super().close()

    def call_soon_threadsafe(self, callback, *args, context=None):
        """As the base loop, except that a wake-up arriving after ``close()`` is dropped (returns None):
        every task of a draining loop has finished before it closes, so no one is left to wake."""
        if self.is_closed():
            return None
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if self.is_closed():  # closed between the check and the call
                return None
            raise

    def drain(self) -> None:
        """Cancel this loop's unfinished tasks, run until they are done, shut the default executor down."""
        try:
            pending = [t for t in asyncio.all_tasks(self) if not t.done()]
        except RuntimeError:  # the global task set changed size 1000 times in a row: close as before
            return
        for task in pending:
            task.cancel()
        if pending:
            self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.run_until_complete(self.shutdown_default_executor())


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = DrainingEventLoop


_lock = threading.Lock()
_depth = 0
_previous: asyncio.AbstractEventLoopPolicy | None = None


@contextlib.contextmanager
def draining_event_loops() -> Iterator[None]:
    """Inside: ``asyncio.new_event_loop()`` returns a :class:`DrainingEventLoop` (in every thread,
    since the event loop policy is process-wide); the previous policy is put back at the end.
    Re-entrant and thread-safe (nested or concurrent uses share one swap)."""
    global _depth, _previous
    with _lock:
        if _depth == 0:
            _previous = asyncio.get_event_loop_policy()
            asyncio.set_event_loop_policy(_DrainingPolicy())
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                asyncio.set_event_loop_policy(_previous)
                _previous = None
