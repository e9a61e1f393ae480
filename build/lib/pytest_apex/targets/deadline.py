"""One deadline shared by every step of a teardown, so the whole of it is bounded.

Each command gets what is left of the budget as its timeout, not a timeout of its own: three
steps of "at most five minutes" each are fifteen minutes during which Ctrl-C is held.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """`seconds` from now, by `clock`."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self, at_most: float) -> float:
        """A command's timeout: `at_most`, or what is left when that is less."""
        return min(at_most, self.remaining())
