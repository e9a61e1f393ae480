"""Live lines on pytest's terminal while a test runs (the load suite's stage progress).

A test runs with output capture on, so a print during a five-minute load run would show
only after it, and only if it failed: the run would look hung. Each line is written past
the capture, the way pytest's live logging does it, through the terminal reporter, so it
shows under ``-q`` too. On a terminal the line is rewritten in place; in a log (CI) one
line is written every `log_every_s` plus each stage's final one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Final

import pytest

from pytest_apex.load.progress import Writer

LOG_EVERY_S: Final = 10.0


@contextlib.contextmanager
def live_writer(config: pytest.Config, *, log_every_s: float = LOG_EVERY_S) -> Iterator[Writer]:
    """A `pytest_apex.load.progress.Writer` onto the terminal, for the `with` block."""
    capman = config.pluginmanager.getplugin("capturemanager")
    # An xdist worker's terminal is nobody's; its stderr reaches the controller's terminal.
    worker = hasattr(config, "workerinput")
    reporter = None if worker else config.pluginmanager.getplugin("terminalreporter")
    tty = bool(reporter is not None and reporter.isatty())
    last = [-float("inf")]
    started = [False]

    def write(line: str, final: bool) -> None:
        if not tty and not final and time.monotonic() - last[0] < log_every_s:
            return
        last[0] = time.monotonic()
        disabled = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with disabled:
            if reporter is None:
                sys.stderr.write(line + "\n")
                return
            if not started[0]:
                reporter.ensure_newline()  # below the "test_load.py " of the running test
                started[0] = True
            if tty:
                reporter.rewrite(line, erase=True)
                if final:
                    reporter.write("\n")
            else:
                reporter.write_line(line)
            reporter.flush()

    yield write
