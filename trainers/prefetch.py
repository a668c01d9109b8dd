"""A background thread that prepares the next batch while the device runs the current step."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Raised:
    """An exception of the producer thread, delivered in order to the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class BatchLoader(Generic[T]):
    """Calls ``produce()`` in a background thread, up to ``depth`` results ahead; ``next()`` returns
    them in the order produced.

    The trainer's ``produce`` reads, pairs, tokenises and pins the next batch (:func:`trainers.training.prepare_inputs`)
    while the device runs the current step; the tokenizer and the data readers release the GIL in
    their native code. One producer thread and a FIFO queue keep the sequence exactly that of calling
    ``produce()`` in a loop (``depth=0`` does that, on the caller's thread). An exception raised by
    ``produce`` is re-raised by the ``next()`` that would have returned its result. Call
    :meth:`close` (or use ``with``) to stop the thread.
    """

    def __init__(self, produce: Callable[[], T], depth: int = 2):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.produce, self.depth = produce, depth
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue: queue.Queue[T | _Raised] = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="mixopt-batch-loader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: T | _Raised = self.produce()
            except BaseException as e:  # delivered to the consumer, which decides
                item = _Raised(e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, _Raised):
                return

    def __iter__(self) -> BatchLoader[T]:
        return self

    def __next__(self) -> T:
        if self._thread is None:
            if self._stop.is_set():
                raise StopIteration
            return self.produce()
        if self._stop.is_set():
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _Raised):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer (it finishes the batch in hand) and drop what it prepared."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.05)

    def __enter__(self) -> BatchLoader[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
