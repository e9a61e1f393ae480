"""SIGTERM as Ctrl-C for the run, and both held off while the stack is torn down."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


def install_sigterm_handler() -> Any:
    """Turn SIGTERM into KeyboardInterrupt so pytest unwinds and the stack is torn down.

    Returns the handler it replaced (None when it installed nothing), for
    `restore_sigterm_handler` to put back: an in-process pytest run (pytester) must not
    leave its handler in the host.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None  # somebody else handles it; don't take it from them
    signal.signal(signal.SIGTERM, _on_sigterm)
    return previous


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def restore_sigterm_handler(previous: Any) -> None:
    if previous is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held(progress: Callable[[str], None], doing: str) -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the stack is torn down, saying so.

    The first one already stopped the tests; another one arriving mid-`down` would leave
    half a stack behind. The teardown is bounded by one deadline, so this is short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _held(signum: int, frame: object) -> None:
        progress(f"{doing}; please wait (signal {signum} ignored until it is done)")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _held)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
