"""Live lines past pytest's capture: rewritten in place on a terminal, throttled in a log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pytest_apex.reporting.live import live_writer


class FakeReporter:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.out: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def ensure_newline(self) -> None:
        self.out.append("<newline>")

    def rewrite(self, line: str, erase: bool = False) -> None:
        self.out.append("\r" + line)

    def write(self, text: str) -> None:
        self.out.append(text)

    def write_line(self, line: str) -> None:
        self.out.append(line + "\n")

    def flush(self) -> None:
        pass


class FakeCapture:
    def __init__(self) -> None:
        self.lifted = 0

    @contextlib.contextmanager
    def global_and_fixture_disabled(self) -> Iterator[None]:
        self.lifted += 1
        yield


class FakeConfig:
    def __init__(self, reporter: FakeReporter, capture: FakeCapture) -> None:
        plugins = {"terminalreporter": reporter, "capturemanager": capture}
        self.pluginmanager: Any = type("PM", (), {"getplugin": lambda _, name: plugins[name]})()


def test_on_a_terminal_the_line_is_rewritten_and_each_stage_keeps_its_last() -> None:
    reporter, capture = FakeReporter(tty=True), FakeCapture()
    with live_writer(FakeConfig(reporter, capture)) as write:  # type: ignore[arg-type]
        write("stage 1 at 1 s", False)
        write("stage 1 at 2 s", False)
        write("stage 1 done", True)
    assert reporter.out == [
        "<newline>",
        "\rstage 1 at 1 s",
        "\rstage 1 at 2 s",
        "\rstage 1 done",
        "\n",
    ]
    assert capture.lifted == 3  # every line written past the capture


def test_in_a_log_lines_are_throttled_but_no_final_line_is_lost() -> None:
    reporter, capture = FakeReporter(tty=False), FakeCapture()
    with live_writer(FakeConfig(reporter, capture), log_every_s=3600) as write:  # type: ignore[arg-type]
        write("stage 1 at 1 s", False)
        write("stage 1 at 2 s", False)  # within the hour: dropped
        write("stage 1 done", True)
        write("stage 2 done", True)
    assert reporter.out == ["<newline>", "stage 1 at 1 s\n", "stage 1 done\n", "stage 2 done\n"]
