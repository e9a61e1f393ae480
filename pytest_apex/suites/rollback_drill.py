"""The drill's moves that are not measurements: deploying, the rollback command, its RTO,
and the report's post-rollback alert thresholds as checks.

The rollback runs the documented command (``python -m pytest_apex.rollback ...``, see
docs/rollback.md) in a child process, exactly as a person would type it, and the RTO runs
from the decision until the baseline answers as itself again.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pytest_apex.load.availability import AvailabilityProber
from pytest_apex.recording import Check
from pytest_apex.rollback.cli import command_line, shown

ROLLBACK_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True)
class RollbackRun:
    """What the rollback command did, as the drill saw it."""

    command: str
    status: int
    output: str
    seconds: float  # from the decision until the baseline answered (the RTO)


async def run_rollback(
    project: str, files: Sequence[Path], release: str, decided_at: float
) -> RollbackRun:
    """The documented rollback command, in a child process; bounded by `ROLLBACK_TIMEOUT_S`."""
    args = command_line(project, files, release)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest_apex.rollback",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), ROLLBACK_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        return RollbackRun(shown(args), -1, out.decode(errors="replace"), math.nan)
    seconds = time.monotonic() - decided_at
    status = process.returncode if process.returncode is not None else -1
    return RollbackRun(shown(args), status, out.decode(errors="replace"), seconds)


def rto_check(run: RollbackRun, rto_max: float) -> Check:
    broken = (
        f"`{run.command}` exited {run.status}: {run.output.strip()[-400:]}" if run.status else ""
    )
    return Check(
        "rto_s",
        math.nan if broken else run.seconds,
        rto_max,
        "<=",
        unit="s",
        detail=f"`{run.command}`",
        inconclusive=broken,
    )


def outage_check(prober: AvailabilityProber, service: str, since_s: float, rto_max: float) -> Check:
    """Failed probes of the rolled-back service from the decision on, as seconds of outage;
    an outage longer than the RTO budget means users saw errors beyond it."""
    seen = prober.services.get(service)
    if seen is None:
        return Check(
            "rollback_outage_s",
            math.nan,
            rto_max,
            "<=",
            unit="s",
            inconclusive=f"{service} has no health route to probe during the rollback",
        )
    outages = [o for o in seen.outages if o.end_s >= since_s]
    failed = sum(o.probes for o in outages)
    longest = max((o.end_s - max(o.start_s, since_s) for o in outages), default=0.0)
    reasons = ", ".join(f"{r} x{n}" for r, n in seen.reasons.most_common(2))
    return Check(
        "rollback_outage_s",
        longest,
        rto_max,
        "<=",
        unit="s",
        detail=f"{failed} failed probes of {service} during the rollback"
        + (f" ({reasons})" if failed else ""),
        samples=seen.probes,
        min_samples=1,
        inconclusive=f"the prober stopped: {prober.error!r}" if prober.error else "",
    )


def within(name: str, check: Check, measured_after_s: float, window_s: float) -> Check:
    """`check`, measured `measured_after_s` after the rollback, must hold within `window_s`."""
    late = measured_after_s > window_s
    too_late = f"measured {measured_after_s:.0f} s after the rollback, past its window"
    return Check(
        name,
        check.observed,
        check.threshold,
        check.op,
        unit=check.unit,
        detail=f"{check.detail}; measured {measured_after_s:.0f} s after the rollback "
        f"(window {window_s:g} s)",
        samples=check.samples,
        min_samples=check.min_samples,
        inconclusive=check.inconclusive or (too_late if late else ""),
    )


def memory_check(used: Mapping[str, float], limits: Mapping[str, int], ratio_max: float) -> Check:
    """The highest memory use over limit of the rolled-back service's containers."""
    ratios = {
        name: used[name] / limits[name] for name in used if limits.get(name) and used[name] >= 0
    }
    if not ratios:
        why = (
            "no memory limit to compare with (the container runs unlimited)"
            if used
            else "no memory reading of the service"
        )
        return Check("post_rollback_memory_ratio", math.nan, ratio_max, "<=", inconclusive=why)
    worst = max(ratios, key=ratios.__getitem__)
    return Check(
        "post_rollback_memory_ratio",
        ratios[worst],
        ratio_max,
        "<=",
        detail=f"{worst}: {used[worst] / 2**20:.0f} MiB of {limits[worst] / 2**20:.0f} MiB",
        samples=len(ratios),
        min_samples=1,
    )
