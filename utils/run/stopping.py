"""Stopping a run cleanly: Ctrl-C (SIGINT) and SIGTERM (what SLURM, Kubernetes and ``timeout``
send before SIGKILL) both stop it after the write in progress.

``stop_signals()`` (around a whole run) turns SIGTERM into ``Terminated``, a
``KeyboardInterrupt``, so both unwind the same way; a second SIGTERM exits at once (status
143): every file is written atomically, so even then no partial output is left.
``writes_finish_first()`` (around one video's writes) holds either signal until the block
is done, then raises it.  Both act only in the main thread, and leave a handler someone else
installed (a launcher's) alone.

A launcher may also end the task itself, by raising its own exception from its signal handler
(submitit's ``UncompletedJobError`` when it will not requeue a timed-out task).  Those
(``utils.errors.launcher_exceptions()``) are never a video's failure: the run stops as on
SIGTERM and the exception goes on to the launcher.
"""
import contextlib
import os
import signal
import threading
from typing import Iterator, List


EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143   # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The run received SIGTERM."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, lambda s, f: os._exit(EXIT_TERMINATED))  # the second: at once
    raise Terminated


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def writes_finish_first() -> Iterator[None]:
    """Hold a Ctrl-C or (under ``stop_signals``) a SIGTERM that arrives inside the block until
    the block is done, then raise it (``KeyboardInterrupt`` or ``Terminated``)."""
    if not _in_main_thread():
        yield
        return
    received: List[int] = []
    previous = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, lambda s, f: received.append(s))
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _held_sigterm(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if signal.SIGTERM in received:
            _on_sigterm(signal.SIGTERM, None)
        if received:
            raise KeyboardInterrupt


def _held_sigterm(received: List[int]):
    def handler(signum, frame):
        if signal.SIGTERM in received:  # a second SIGTERM: at once
            os._exit(EXIT_TERMINATED)
        received.append(signum)
    return handler
