"""Negative checks with positive controls: a refusal only counts next to an acceptance.

A service that refuses everything, a route that does not exist (404, or a WebSocket path
nobody serves, which Starlette answers with 403) and a probe that cannot connect all
"refuse" a forged token or a foreign origin. So every negative probe is paired with its
control on the same route (the genuine token, the configured origin): where the control
did not get in, the refusal proves nothing and the criterion is inconclusive; a breach is
a failure whatever the control did. No probe at all is inconclusive too: an empty list of
answers is no proof, and ``sum(...) == len(...)`` would pass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pytest_apex.recording import Check


@dataclass(frozen=True)
class Outcome:
    """One positive probe: did the genuine request get what it should, and what was seen."""

    ok: bool
    seen: str


def every(name: str, outcomes: Sequence[Outcome], *, nothing: str) -> Check:
    """All `outcomes` ok; inconclusive (with `nothing` as the reason) when there are none."""
    failed = [o.seen for o in outcomes if not o.ok]
    return Check(
        name,
        sum(o.ok for o in outcomes),
        len(outcomes),
        "==",
        detail="; ".join(failed or [o.seen for o in outcomes]),
        inconclusive="" if outcomes else nothing,
    )


@dataclass(frozen=True)
class Controlled:
    """A negative probe beside its positive control on the same route.

    `refused`: the service refused it explicitly (401/403, a close code, no CORS grant);
    `let_in`: it got what only the genuine request should. A probe can be neither (a 500,
    no answer): a failure where the control got in, since that is no refusal.
    """

    route: str
    control_ok: bool
    control_seen: str
    refused: bool
    let_in: bool
    seen: str

    @property
    def proven(self) -> bool:
        return self.control_ok and self.refused

    @property
    def failed(self) -> bool:
        return self.let_in or (self.control_ok and not self.refused)


def refusals(name: str, probes: Sequence[Controlled], *, nothing: str) -> Check:
    """Every probe refused where its control got in.

    Fails on any breach (or a non-refusal on a controlled route), naming it; otherwise
    inconclusive when a control failed (naming the route and what its control saw) or
    when there was nothing to probe; else passes.
    """
    failures = [f"{p.route}: {p.seen}" for p in probes if p.failed]
    unproven = [
        f"{p.route}: the control did not get in ({p.control_seen}), so the refusal "
        f"({p.seen}) proves nothing"
        for p in probes
        if not p.failed and not p.proven
    ]
    if not probes:
        reason = nothing
    elif unproven and not failures:
        reason = f"{len(unproven)} of {len(probes)} refusals stand on a failed control"
    else:
        reason = ""
    return Check(
        name,
        sum(p.proven for p in probes),
        len(probes),
        "==",
        detail="; ".join(dict.fromkeys(failures + unproven)),
        inconclusive=reason,
    )
