"""Run producers in background threads, a bounded number of items ahead of their consumer.

Decoding (PyAV releases the GIL) then overlaps with the network; the bounds keep memory
independent of a video's length.  Exceptions reach the consumer at the point they occurred.

``prefetch_jobs(jobs, workers, depth)``: one stream per job (the batches of one video),
consumed in order, with up to ``workers`` of them produced at once, so that decoding of the
next video starts while the current one is still being computed: a job starts only when it
is at most ``workers`` jobs after the one being consumed, so at most ``(workers + 1) * depth``
items wait in memory, however short the videos are.
"""
import logging
import queue
import threading
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1  # how often a blocked producer checks whether its consumer has gone


DEFERRED_LOGGERS = ("utils", "models", "libav")
_producer = threading.local()  # .channel: the channel a producer thread is filling


class _Record:
    def __init__(self, record: logging.LogRecord):
        self.record = record


class _DeferToConsumer(logging.Filter):
    """On a producer thread, queue the record for the consumer instead of handling it now."""

    def filter(self, record: logging.LogRecord) -> bool:
        channel = getattr(_producer, "channel", None)
        if channel is None or getattr(record, "_replayed", False):
            return True
        return not channel.put(_Record(record))  # if the consumer has gone, log it here


_DEFER = _DeferToConsumer()


def _install_log_deferral() -> None:
    """Put the filter on every existing logger under DEFERRED_LOGGERS (idempotent).

    Logger filters only see records logged to that very logger, so it goes on each one; the
    modules that log while decoding create their loggers at import, before any run.
    """
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in DEFERRED_LOGGERS]
    for name in names + list(DEFERRED_LOGGERS):
        logger = logging.getLogger(name)
        if _DEFER not in logger.filters:
            logger.addFilter(_DEFER)


def _replay(record: logging.LogRecord) -> None:
    record._replayed = True
    logging.getLogger(record.name).handle(record)


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Channel:
    """The bounded queue between one job's producer and the consumer."""

    def __init__(self, depth: int):
        self.queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def put(self, item) -> bool:
        """Block until there is room; False (item dropped) once the consumer has stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False


def _produce(job: Callable[[], Iterable], channel: _Channel) -> None:
    """Run one job into its channel; always ends with _DONE, an error, or a stopped channel."""
    iterator = None
    _producer.channel = channel
    try:
        iterator = iter(job())
        for item in iterator:
            if not channel.put(item):
                return
    except BaseException as e:  # noqa: B902 -- handed to the consumer, which re-raises it
        channel.put(_Raised(e))
        return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()  # runs the generator's cleanup (closes the decoder) in this thread
            except Exception:  # noqa: BLE001 -- a worker must outlive one job's cleanup
                log.warning("cleaning up after a stream that was left early failed",
                            exc_info=True)
        _producer.channel = None
    channel.put(_DONE)


def _drain(channel: _Channel) -> Iterator:
    """The consumer side of a channel; closing it stops the producer."""
    try:
        while True:
            item = channel.queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Record):
                _replay(item.record)
                continue
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        channel.stop.set()


def prefetch_jobs(jobs: Sequence[Callable[[], Iterable[T]]], workers: int,
                  depth: int) -> Iterator[Iterator[T]]:
    """Yield one stream of items per job, in job order.

    Up to ``workers`` threads run the jobs in order, each at most ``depth`` items ahead of the
    consumer and at most ``workers`` jobs after the stream being consumed; ``workers <= 0`` runs every job inline when its stream is read.  A stream may be
    left before its end (the next stream, or closing this generator, stops its producer).  An
    exception raised by a job comes out of its stream, and the next streams go on.
    """
    if workers <= 0 or not jobs:
        for job in jobs:
            yield iter(job())
        return
    depth = max(1, depth)
    _install_log_deferral()
    channels: List[Optional[_Channel]] = [None] * len(jobs)
    ready = threading.Condition()
    closing = threading.Event()
    next_job = [0]
    consuming = [0]  # the index of the stream the consumer is on

    def work() -> None:
        while True:
            with ready:
                while (not closing.is_set() and next_job[0] < len(jobs)
                       and next_job[0] > consuming[0] + workers):
                    ready.wait()
                index = next_job[0]
                if closing.is_set() or index >= len(jobs):
                    return
                next_job[0] += 1
                channel = channels[index] = _Channel(depth)
                ready.notify_all()
            _produce(jobs[index], channel)

    threads = [threading.Thread(target=work, name=f"prefetch-{i}", daemon=True)
               for i in range(min(workers, len(jobs)))]
    for thread in threads:
        thread.start()
    current: Optional[Iterator] = None
    try:
        for index in range(len(jobs)):
            with ready:
                consuming[0] = index
                ready.notify_all()
                while channels[index] is None:
                    ready.wait()
                channel = channels[index]
            current = _drain(channel)
            yield current
            current.close()  # the consumer may have left it early: stop that producer
            channels[index] = None  # let its last items be freed
    finally:
        with ready:  # no worker starts a job after this
            closing.set()
            ready.notify_all()
            started = [channel for channel in channels if channel is not None]
        if current is not None:
            current.close()
        for channel in started:
            channel.stop.set()
        for thread in threads:
            thread.join()
