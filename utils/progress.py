"""Progress bars for a batch run: one over videos and, for long videos, one over their stacks.

Bars go to stderr and only when it is a terminal (tqdm's ``disable=None``), so logs and pipes
stay clean; meanwhile console log lines are routed through ``tqdm.write`` so they do not break
the bars.  The run's last line (videos, stacks, seconds of video, wall time, stacks/s) is
``utils.run_report.RunReport.summary``; this module only draws the bars.
"""
import contextlib
import logging
import os
import sys
import time
from typing import Optional

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)

LONG_VIDEO_STACKS = 16  # a video expected to give at least this many stacks gets its own bar


class RunProgress:
    """``video_started(path)``, ``stacks_done(n, info)``, ``video_finished(path, ok)``; ``close()``.

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

    def stacks_done(self, n: int, info: Optional[dict] = None) -> None:
        self.total_stacks += n
        if not self.enabled:
            return
        expected = (info or {}).get("expected_stacks")
        if self.stacks_bar is None and expected and expected >= self.long_video_stacks:
            self.stacks_bar = tqdm(total=expected, unit="stack", desc="stacks", leave=False,
                                   file=sys.stderr, dynamic_ncols=True)
        if self.stacks_bar is not None:
            self.stacks_bar.update(n)
        self._postfix()

    def video_finished(self, path: str, ok: bool = True) -> None:
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
