"""Progress lines: their wording, and the terminal writer in a log (throttled)."""

from __future__ import annotations

import io
import math

from pytest_apex.load.progress import Snapshot, terminal_writer


def test_a_line_says_stage_users_rate_p95_and_errors():
    line = Snapshot(2, 5, "25 users", 25, 10.0, 20.0, 3120, 4, 0.0412, dropped=2).line()
    assert line == (
        "load stage 2/5 (25 users): 25 users, 312 req/s, p95 41.2 ms, 4 errors, 2 dropped, 10/20 s"
    )
    empty = Snapshot(1, 1, "10 users", 0, 0.0, 20.0, 0, 0, math.nan).line()
    assert "p95 -" in empty
    assert "0 req/s" in empty


def test_in_a_log_the_writer_throttles_live_lines_but_never_the_final_one():
    out = io.StringIO()
    write = terminal_writer(out, log_every_s=3600)
    write("first", False)
    write("second", False)  # within the throttle: dropped
    write("done", True)
    assert out.getvalue().splitlines() == ["first", "done"]
