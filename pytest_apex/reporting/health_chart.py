"""The health suite's response-time chart: every probe of each service against the threshold.

One PNG (matplotlib's Agg canvas: no display, no pyplot), attached to the health response
test in the Allure report, so a slow service reads at a glance: its probes sit right of the
threshold line, and a probe that got no answer is drawn where its wait ended, as a cross.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Final

from pytest_apex.health.probes import HealthProbe

_DPI: Final = 100
_ANSWERED: Final = "#1f77b4"
_UNANSWERED: Final = "#d62728"


def response_time_chart(
    probes: Mapping[str, Sequence[HealthProbe]], threshold_s: float, op: str = "<="
) -> bytes:
    """A PNG: one row per service, one dot per probe (seconds), the threshold as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(probes)
    figure = Figure(figsize=(7.0, 0.6 * max(len(names), 1) + 1.4), dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for row, name in enumerate(names):
        for probe in probes[name]:
            if math.isnan(probe.seconds):
                continue
            answered = probe.answered
            axes.plot(
                probe.seconds,
                row,
                marker="o" if answered else "x",
                color=_ANSWERED if answered else _UNANSWERED,
                alpha=0.7,
                linestyle="none",
            )
    axes.axvline(
        threshold_s, color="#555555", linestyle="--", label=f"threshold {op} {threshold_s:g} s"
    )
    axes.set_yticks(range(len(names)), names)
    axes.set_ylim(-0.6, max(len(names), 1) - 0.4)
    axes.set_xlim(left=0)
    axes.set_xlabel("health endpoint response time (s)")
    axes.set_title("Health response times (x: no answer)")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(axis="x", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()
