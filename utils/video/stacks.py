"""Cut a stream of frames into windows ("stacks") of ``stack_size`` frames, ``step_size`` apart.

Only full stacks are produced: a video of N >= stack_size frames gives
``(N - stack_size) // step_size + 1`` stacks.  Memory holds at most one stack of frames.
"""
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator, Tuple

import numpy as np


@dataclass
class Stack:
    index: int
    frames: np.ndarray   # (stack_size, H, W, 3)
    start_ms: float      # time of the first frame
    end_ms: float        # time of the first frame after the stack (or end of the last frame)


def num_stacks(num_frames: int, stack_size: int, step_size: int) -> int:
    if num_frames < stack_size:
        return 0
    return (num_frames - stack_size) // step_size + 1


class StackCutter:
    """Consumes ``(array, start_ms, end_ms)`` frames and yields full ``Stack`` objects."""

    def __init__(self, stack_size: int, step_size: int):
        if stack_size < 1 or step_size < 1:
            raise ValueError("stack_size and step_size must be positive")
        self.stack_size = stack_size
        self.step_size = step_size
        self.num_frames = 0

    def __call__(self, frames: Iterable[Tuple[np.ndarray, float, float]]) -> Iterator[Stack]:
        window: deque = deque()
        skip = 0
        index = 0
        for item in frames:
            self.num_frames += 1
            if skip:
                skip -= 1
                continue
            window.append(item)
            if len(window) == self.stack_size:
                yield Stack(index, np.stack([f for f, _, _ in window]), window[0][1], window[-1][2])
                index += 1
                drop = min(self.step_size, self.stack_size)
                for _ in range(drop):
                    window.popleft()
                skip = self.step_size - drop
