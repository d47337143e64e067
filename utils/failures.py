"""The one error type a video can fail with, tagged with the pipeline stage."""

STAGES = ("open", "decode", "too_short", "model", "write")


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
