"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

Decoding (PyAV releases the GIL) then overlaps with the network; the bound keeps memory
independent of the video's length.  Exceptions reach the consumer at the point they occurred.
"""
import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(iterable: Iterable[T], depth: int) -> Iterator[T]:
    """Yield the items of ``iterable``, produced by a thread at most ``depth`` items ahead.

    ``depth <= 0`` runs inline.  Closing the returned generator stops the producer.
    """
    if depth <= 0:
        yield from iterable
        return
    q: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(_Raised(e))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()
