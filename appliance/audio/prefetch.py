"""Read a blocking iterator (a file being decoded) in a thread, a bounded number of blocks ahead.

``appliance ask`` starts reading the question while the WebSocket connects, and keeps at most
``max_blocks`` converted blocks in memory: the reader thread waits for room, so a ten-minute
question costs no more memory than a three-second one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable

_END = object()


class BlockPrefetch:
    """``await next_block()`` gives the iterator's blocks in order, then None; errors re-raise."""

    def __init__(self, make_blocks: Callable[[], Iterable[bytes]], max_blocks: int = 8) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(max_blocks)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(make_blocks,), name="question-reader", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> None:
        if not self._closed.is_set():
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is reading any more
                self._closed.set()

    def _run(self, make_blocks: Callable[[], Iterable[bytes]]) -> None:
        blocks = iter(())
        try:
            blocks = iter(make_blocks())
            for block in blocks:
                self._room.acquire()
                if self._closed.is_set():
                    return
                self._put(block)
            self._put(_END)
        except BaseException as exc:  # handed to the reader; nothing is lost in the thread
            self._put(exc)
        finally:
            close = getattr(blocks, "close", None)  # a generator: its finally runs now (ffmpeg)
            if close is not None:
                close()

    async def next_block(self) -> bytes | None:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # a second call at the end gets None again
            return None
        if isinstance(item, BaseException):
            raise item
        self._room.release()
        assert isinstance(item, bytes)
        return item

    def close(self) -> None:
        """Stop reading (the thread ends at its next block); safe to call twice."""
        self._closed.set()
        self._room.release()  # a reader waiting for room wakes up and sees the close

    async def aclose(self) -> None:
        """Stop reading and wait (a bounded time, off the loop) until the thread has ended: a
        reader thread still inside libsndfile, soxr or an import when the interpreter shuts
        down can abort the process (``ask`` with a refused key exited -6 now and then)."""
        self.close()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)
