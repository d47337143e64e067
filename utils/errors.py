"""The errors a run can stop or fail a video with, and the one-line form every message takes;
the launcher exceptions that are never a video's failure (``launcher_exceptions``).

``InputError`` and ``WeightsError`` stop the whole run before any video (exit status 2);
``ExtractionError`` fails one video at one pipeline stage and the batch goes on.  Both sides
of the code (``utils/`` and ``models/``) raise these, so they live here, on the utils side.
"""
import re
import sys
from typing import Tuple, Type

import av

STAGES = ("open", "decode", "too_short", "model", "write")
# Failures that bad input or resources explain; any other exception type is a bug of ours.
EXPECTED_CAUSES = (av.error.FFmpegError, RuntimeError, ValueError, OSError, MemoryError)


def one_line(cause, limit: int = 0) -> str:
    """The first non-blank line of an exception's (or any) text; an exception without text
    gives its type's name.  ``limit``: also cut at the first sentence and to that length."""
    text = str(cause).strip()
    if not text and isinstance(cause, BaseException):
        return type(cause).__name__
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if limit:
        line = re.split(r"(?<=[^.\s]{2})\. ", line, maxsplit=1)[0].rstrip(".")
        if len(line) > limit:
            line = line[:limit - 3] + "..."
    return line


class InputError(ValueError):
    """The list of inputs or the output folder is unusable (not one video of it: the whole run)."""


class WeightsError(Exception):
    """A checkpoint cannot be fetched, read or loaded; the message says which file and why."""


class ExtractionError(Exception):
    """A video could not be turned into features; ``stage`` says where it failed."""

    def __init__(self, stage: str, message: str):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"

    @classmethod
    def wrap(cls, stage: str, cause: Exception) -> "ExtractionError":
        """``cause``, raised in ``stage``, as an ExtractionError (itself if it already is one).

        Raise the result ``from cause``: the traceback stays available (``debug=true``), and
        ``unexpected`` tells a bug of ours from bad input."""
        if isinstance(cause, ExtractionError):
            return cause
        text = str(cause).strip()
        if isinstance(cause, av.error.FFmpegError):
            message = text  # FFmpeg's own words already say what it is
        else:
            message = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
        return cls(stage, message)

    @property
    def unexpected(self) -> bool:
        """True when caused by an exception that bad input does not explain (a bug)."""
        cause = self.__cause__
        return cause is not None and not isinstance(cause, EXPECTED_CAUSES)


# (module, class): the exceptions a launcher raises inside a task to end it.  Looked up in
# sys.modules, so nothing here imports a launcher: a class whose module was never imported
# cannot have been raised.
LAUNCHER_EXCEPTIONS: Tuple[Tuple[str, str], ...] = (
    ("submitit.core.utils", "UncompletedJobError"),  # "Job not requeued because: ..."
)


def launcher_exceptions() -> Tuple[Type[BaseException], ...]:
    """The launcher control exceptions loaded in this process (for an ``except`` clause):
    never a video's failure."""
    found = []
    for module, name in LAUNCHER_EXCEPTIONS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)
