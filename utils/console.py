"""What the user sees on the terminal: log lines, progress bars, printed features and predictions.

Log lines go to stderr (``setup_logging``); ``print`` is only for what the user asked to see
(the ``print`` sink and ``show_pred``).

Progress bars: one over videos and, for long videos, one over their stacks.

Bars go to stderr and only when it is a terminal (tqdm's ``disable=None``), so logs and pipes
stay clean; meanwhile console log lines are routed through ``tqdm.write`` so they do not break
the bars.  The run's last line (videos, stacks, seconds of video, wall time, stacks/s) is
``utils.records.run_report.RunReport.summary``.
"""
import contextlib
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)

LONG_VIDEO_STACKS = 16  # a video expected to give at least this many stacks gets its own bar


def setup_logging(debug: bool = False, level: int = logging.INFO) -> None:
    """Plain messages on stderr (``WARNING:`` in front of warnings), from ``level`` on (DEBUG
    with ``debug``).  Each message is one line as ``printable_path`` shows it: a name read
    from a file (a planted one with a newline or a terminal escape) cannot forge a line."""
    class Formatter(logging.Formatter):
        def formatMessage(self, record):
            record.message = printable_path(record.message)
            msg = super().formatMessage(record)
            return f"WARNING: {msg}" if record.levelno == logging.WARNING else msg

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else level)
    for noisy in ("libav", "PIL", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


class RunProgress:
    """``video_started(path)``, ``stacks_done(n, expected)``, ``video_finished()``; ``close()``.

    ``enabled``: None shows the bars only when stderr is a terminal; False never; True always.
    """

    def __init__(self, total_videos: int, enabled: Optional[bool] = None,
                 long_video_stacks: int = LONG_VIDEO_STACKS):
        disable = None if enabled is None else not enabled
        self.videos = tqdm(total=total_videos, unit="video", desc="videos", file=sys.stderr,
                           disable=disable, dynamic_ncols=True)
        self.enabled = not self.videos.disable
        self.long_video_stacks = long_video_stacks
        self.stacks_bar: Optional[tqdm] = None
        self.total_stacks = 0
        self.started = time.perf_counter()
        self._logging = contextlib.ExitStack()
        if self.enabled:
            self._logging.enter_context(logging_redirect_tqdm())

    def video_started(self, path: str) -> None:
        if self.enabled:
            self.videos.set_description_str(f"videos ({os.path.basename(path)})", refresh=False)

    def stacks_done(self, n: int, expected: Optional[int] = None) -> None:
        """``n`` more stacks of the current video, of ``expected`` in all (when known)."""
        self.total_stacks += n
        if not self.enabled:
            return
        if self.stacks_bar is None and expected and expected >= self.long_video_stacks:
            self.stacks_bar = tqdm(total=expected, unit="stack", desc="stacks", leave=False,
                                   file=sys.stderr, dynamic_ncols=True)
        if self.stacks_bar is not None:
            self.stacks_bar.update(n)
        self._postfix()

    def video_finished(self) -> None:
        if self.stacks_bar is not None:
            self.stacks_bar.close()
            self.stacks_bar = None
        if self.enabled:
            self.videos.update(1)
            self._postfix()

    def _postfix(self) -> None:
        wall = time.perf_counter() - self.started
        rate = self.total_stacks / wall if wall > 0 else 0.0
        self.videos.set_postfix_str(f"{self.total_stacks} stacks, {rate:.2f} stacks/s")

    def close(self) -> None:
        if self.stacks_bar is not None:
            self.stacks_bar.close()
            self.stacks_bar = None
        self.videos.close()
        self._logging.close()

    def __enter__(self) -> "RunProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProgressLog:
    """Off a terminal (a cluster log file), one plain ``progress:`` line at most every
    ``every_s`` seconds, and one at the end: videos done/skipped/failed of the total, stacks/s
    and an ETA.  ``every_s=0``, or a terminal (where the bars are), turns it off."""

    def __init__(self, total: int, every_s: float, enabled: Optional[bool] = None,
                 clock=time.monotonic):
        if enabled is None:
            enabled = not sys.stderr.isatty()
        self.enabled = enabled and every_s > 0
        self.total = total
        self.every_s = every_s
        self.clock = clock
        self.started = self.last = clock()

    def update(self, report, final: bool = False) -> None:
        """Log a line if ``every_s`` has passed since the last one (or ``final``)."""
        now = self.clock()
        if not self.enabled or (not final and now - self.last < self.every_s):
            return
        self.last = now
        log.info("%s", self.line(report, now - self.started))

    def line(self, report, elapsed: float) -> str:
        seen = report.done + report.skipped + report.num_failed
        worked = report.done + report.num_failed  # skipped videos cost (almost) nothing
        left = self.total - seen
        rate = report.stacks / elapsed if elapsed > 0 else 0.0
        eta = (f"ETA {_duration(elapsed / worked * left)}" if worked and left
               else ("ETA 0:00:00" if not left else "ETA unknown"))
        return (f"progress: {seen}/{self.total} videos (done {report.done}, skipped "
                f"{report.skipped}, failed {report.num_failed}), {report.stacks} stacks, "
                f"{rate:.2f} stacks/s, {_duration(elapsed)} elapsed, {eta}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_features(path: str, arrays: Dict[str, np.ndarray], keys) -> None:
    """The ``print`` sink: each of ``keys``, with its shape and dtype."""
    print(f"{path}:")
    for key in keys:
        value = np.asarray(arrays[key])
        print(f"  {key} (shape {value.shape}, {value.dtype}):")
        print("   ", np.array2string(value, threshold=64, edgeitems=3, precision=4).replace("\n", "\n    "))


def print_predictions(path: str, logits: np.ndarray, spans: List[tuple], labels: List[str],
                      k: int = 5, out=None, label_set: str = "") -> None:
    """``show_pred``: per stack, its time range and the top-k classes with logit and
    probability; ``label_set`` names the classes (``Kinetics-400``)."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    print(f"{path}: top-{k} {label_set + ' ' if label_set else ''}classes per stack", file=out)
    for i, (row, prob, (start, end)) in enumerate(zip(logits, probs, spans)):
        top = np.argsort(-row, kind="stable")[:k]
        print(f"  stack {i} [{start / 1000:.2f} s, {end / 1000:.2f} s)", file=out)
        for c in top:
            print(f"    {row[c]:9.3f}  {prob[c]:.3f}  {labels[c]}", file=out)


def printable_path(path: str) -> str:
    """A path (or any one-line text read from a file) as a line shows it: as is when every
    character prints, else each one that does not escaped (``\n``, ``\u001b``: a newline
    in a file name cannot forge a ``FAILED`` line of its own, nor a terminal escape act); a
    byte of a file name that is not UTF-8 (a ``surrogateescape`` surrogate) as ``\xe9``."""
    if path.isprintable():
        return path
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else
                   json.dumps(c)[1:-1] for c in path)


def printable_text(text: str) -> str:
    """Lines of text holding what was read from files (a summary of records, search hits),
    each made printable (``printable_path``); the newlines between them kept."""
    return "\n".join(printable_path(line) for line in text.split("\n"))
