"""A task repeated at a fixed interval beside a load run, bounded in time and in count.

The load engine owns its event loop (and, with workers, its processes); what watches the
target while it runs (health probes, memory samples) runs in a thread of its own, so a
stalled probe cannot delay a request and a busy loop cannot delay a probe. Ticks are
scheduled on a fixed grid from the start: a slow tick is followed by the next one due,
never by a burst of missed ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

Clock = Callable[[], float]
Tick = Callable[[float], None]
JOIN_S: Final = 10.0


class Periodic:
    """Calls ``tick(seconds_since_start)`` every `interval_s` from `__enter__` until
    `__exit__`, at most `max_s` seconds and ``max_s / interval_s + 1`` times."""

    def __init__(
        self,
        name: str,
        tick: Tick,
        interval_s: float,
        max_s: float,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if interval_s <= 0 or not math.isfinite(interval_s):
            raise ValueError(f"{name}: interval must be > 0 s, got {interval_s}")
        self._name = name
        self._tick = tick
        self._interval_s = interval_s
        self._max_s = max_s
        self._max_ticks = int(max_s / interval_s) + 1
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"apex-{name}", daemon=True)
        self.ticks = 0
        self.error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(JOIN_S)

    def _loop(self) -> None:
        start = self._clock()
        slot = 0  # the grid point of the next tick
        while not self._stop.is_set() and self.ticks < self._max_ticks:
            now = self._clock() - start
            if now > self._max_s:
                return
            try:
                self._tick(now)
            except Exception as exc:  # kept for the caller; the run goes on unwatched
                self.error = exc
                return
            self.ticks += 1
            # The next grid point still ahead: an overrun skips the ones it missed.
            slot = max(slot + 1, math.floor((self._clock() - start) / self._interval_s) + 1)
            self._stop.wait(max(0.0, slot * self._interval_s - (self._clock() - start)))
