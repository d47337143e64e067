"""The one error type a video can fail with, tagged with the pipeline stage."""
import av

STAGES = ("open", "decode", "too_short", "model", "write")
# Failures that bad input or resources explain; any other exception type is a bug of ours.
EXPECTED_CAUSES = (av.error.FFmpegError, RuntimeError, ValueError, OSError, MemoryError)


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
