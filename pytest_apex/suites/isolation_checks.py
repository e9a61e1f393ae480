"""The isolation scenarios' success criteria (streaming and REST), each negative one on its
control.

Every "0 breaches" stands on a positive control on the same channel: the users received
their own data there (their own run's events on the socket, their own threads in their own
lists), every probe was answered, and enough was checked to see a rare leak at all. Where a
control did not hold, the breach criterion is inconclusive, never passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from hdrh.histogram import HdrHistogram

from pytest_apex.criteria import holds
from pytest_apex.isolation.agent_scenario import PROBE_KINDS, AgentScenarioResult, RunRecord
from pytest_apex.isolation.inbox import CHANNELS, IN_RUN, Leak
from pytest_apex.isolation.power import describe as describe_power
from pytest_apex.isolation.power import detectable_rate
from pytest_apex.isolation.rest_scenario import RestScenarioResult
from pytest_apex.isolation.roles import COMPLETING
from pytest_apex.recording import Check
from pytest_apex.settings import Thresholds

EXAMPLES: Final = 3


def _ratio_check(name: str, ok: int, sent: int, unit: str, detail: str, nothing: str) -> Check:
    return Check(
        name, ok, sent, ">=", unit=unit, detail=detail, inconclusive="" if sent else nothing
    )


def _short_runs(
    runs: Sequence[RunRecord], result: AgentScenarioResult, expected: str = "completed"
) -> str:
    short = [r for r in runs if r.outcome != expected]
    if not short:
        return ""
    outcomes = ", ".join(
        f"{sum(r.outcome == o for r in short)} {o or 'unanswered'}"
        for o in sorted({r.outcome for r in short})
    )
    examples = "; ".join(
        f"{result.labels.get(r.user, r.user)} round {r.round} ({r.role}): {r.outcome or '?'} "
        f"after {r.own_events} events"
        for r in short[:EXAMPLES]
    )
    return f"{len(short)} runs did not end {expected} ({outcomes}), e.g. {examples}"


def agent_checks(result: AgentScenarioResult, thresholds: Thresholds, users: int) -> list[Check]:
    limit = thresholds.integer("isolation_breaches_max")
    scan = result.scan
    labels = result.labels
    errors = result.describe_errors()
    notes = "; ".join(result.notes)

    def words(*parts: str) -> str:
        return "; ".join(p for p in parts if p)

    def breaches(name: str, leaks: Sequence[Leak], samples: int, control: str) -> Check:
        """`control` says why "none seen" would prove nothing ("" when it holds)."""
        seen = len(leaks)
        check = Check(
            name,
            seen,
            limit,
            "<=",
            detail=scan.summary(labels, leaks, EXAMPLES),
            samples=samples,
            min_samples=1,
        )
        if seen <= limit and control:
            return replace(check, inconclusive=control)
        return check

    own_events = sum(r.own_events for r in result.runs)
    socket_checked = scan.checked["socket"]
    rest_checked = scan.checked["rest"]
    controls = result.own_controls
    rest_control_ok = all(
        controls[f"{c} ok"] >= controls[f"{c} sent"] > 0
        for c in ("own_thread_listed", "own_thread_read")
    )
    in_run = [leak for leak in scan.leaks_on("socket") if leak.received.phase == IN_RUN]
    identity_leaks = [leak for leak in scan.leaks if leak.sighting.kind != "canary"]
    probes = result.probe_counts()
    answered = probes["refused"] + probes["served"]
    served = result.served_probes()
    foreign_cancels = result.foreign_cancellations()
    access_detail = words(
        "; ".join(
            f"{labels.get(p.viewer, p.viewer)} got {p.kind} of {labels.get(p.owner, p.owner)} "
            f"served ({p.detail})"
            for p in served[:EXAMPLES]
        ),
        "; ".join(
            f"the run of {labels.get(r.user, r.user)} in round {r.round} was cancelled, but "
            "not by its user"
            for r in foreign_cancels[:EXAMPLES]
        ),
    )
    unanswered = [p for p in result.probes if p.outcome == "unanswered"]
    probe_detail = words(
        ", ".join(
            f"{kind}: {sum(p.kind == kind and p.outcome != 'unanswered' for p in result.probes)}"
            f"/{sum(p.kind == kind for p in result.probes)}"
            for kind in PROBE_KINDS
        ),
        (
            f"{len(unanswered)} unanswered, e.g. "
            + "; ".join(
                f"{labels.get(p.viewer, p.viewer)} {p.kind}: {p.detail or 'no answer'}"
                for p in unanswered[:EXAMPLES]
            )
        )
        if unanswered
        else "",
    )
    completing = result.runs_of(COMPLETING)
    failing = result.runs_of(frozenset({"fail"}))
    cancelling = result.runs_of(frozenset({"cancel"}))
    calm_adverse = [r for r in result.runs_of(frozenset({"calm"}), burst=False) if r.round > 0]
    calm_baseline = [r for r in result.runs_of(frozenset({"calm"}), burst=False) if r.round == 0]
    total = scan.total_checked
    rate = detectable_rate(total)
    rate_limit = thresholds.number("isolation_detectable_leak_rate_max")
    p95 = result.histogram(calm_adverse)
    baseline = result.histogram(calm_baseline)

    def p95_s(histogram: HdrHistogram) -> float:
        if not histogram.get_total_count():
            return math.nan
        return float(histogram.get_value_at_percentile(95)) / 1000

    containment = p95_s(p95)
    checks = [
        Check(
            "concurrent_users",
            result.simultaneous,
            users,
            ">=",
            unit="users",
            detail=words(
                f"seed {result.spec.seed} (repeat the run with --apex-seed={result.spec.seed})",
                errors,
                notes,
            ),
        ),
        Check(
            "detectable_leak_rate",
            rate,
            rate_limit,
            "<=",
            detail=describe_power(total)
            + f"; {socket_checked:,} socket frames and {rest_checked:,} REST bodies",
            inconclusive="" if total else "nothing was received, so nothing was checked",
        ),
        Check(
            "channels_covered",
            sum(1 for c in CHANNELS if scan.checked[c]),
            len(CHANNELS),
            ">=",
            unit="channels",
            detail="frames by kind: "
            + ", ".join(f"{k} {n}" for k, n in scan.kinds.most_common(12))
            + "; socket frames by phase: "
            + ", ".join(f"{k} {n}" for k, n in scan.phases.most_common()),
        ),
        breaches(
            "cross_user_events",
            in_run,
            socket_checked,
            "" if own_events else "no user received any event of its own runs",
        ),
        breaches(
            "late_foreign_frames",
            scan.late_leaks,
            scan.outside_frames,
            "" if socket_checked else "no socket frame was received",
        ),
        breaches(
            "cross_user_rest",
            scan.leaks_on("rest"),
            rest_checked,
            "" if rest_control_ok else "the users' own threads were not all listed and read back",
        ),
        breaches(
            "cross_user_identities",
            identity_leaks,
            total,
            "" if total else "nothing was received",
        ),
        _ratio_check(
            "own_thread_listed",
            controls["own_thread_listed ok"],
            controls["own_thread_listed sent"],
            "listings",
            words("each user must find its own thread in every listing of its threads", errors),
            "no user listed its threads",
        ),
        _ratio_check(
            "own_thread_read",
            controls["own_thread_read ok"],
            controls["own_thread_read sent"],
            "reads",
            words("each user must read its own thread and its messages back", errors),
            "no user read its thread",
        ),
        _ratio_check(
            "own_run_status_read",
            controls["own_run_status_read ok"],
            controls["own_run_status_read sent"],
            "reads",
            words("each user must read the status of its own runs", errors),
            "no run status was read",
        ),
        _ratio_check(
            "probes_answered",
            answered,
            len(result.probes),
            "probes",
            probe_detail,
            "no probe was sent",
        ),
        Check(
            "cross_user_access",
            len(served) + len(foreign_cancels),
            limit,
            "<=",
            detail=access_detail,
            inconclusive=""
            if served or foreign_cancels or (result.probes and not unanswered)
            else f"{len(unanswered)} of {len(result.probes)} probes went unanswered",
        ),
        _ratio_check(
            "runs_completed",
            sum(r.outcome == "completed" for r in completing),
            len(completing),
            "runs",
            words(_short_runs(completing, result), errors),
            "no run was started",
        ),
        _ratio_check(
            "error_path_exercised",
            sum(r.outcome == "failed" for r in failing),
            len(failing),
            "runs",
            "runs asked to fail must end in the app's error event; "
            + _short_runs(failing, result, "failed"),
            "no run was asked to fail",
        ),
        _ratio_check(
            "cancels_honoured",
            sum(r.outcome in ("cancelled", "completed") for r in cancelling),
            len(cancelling),
            "runs",
            "cancelled runs must end (cancelled, or completed before the cancel arrived); "
            + f"{sum(r.outcome == 'cancelled' for r in cancelling)} ended cancelled",
            "no run was cancelled",
        ),
        Check(
            "containment_p95",
            containment,
            thresholds.seconds("isolation_run_p95_s_max"),
            "<=",
            unit="s",
            detail=f"calm users' runs while others cancelled, reconnected, failed and flooded; "
            f"the calm round's p95 was {p95_s(baseline):.2f} s",
            samples=p95.get_total_count(),
            min_samples=1,
        ),
        cleanup_check(result, thresholds),
    ]
    return unknown_where_lost(checks, result.lost)


def cleanup_check(result: AgentScenarioResult, thresholds: Thresholds) -> Check:
    limit = thresholds.seconds("isolation_cleanup_s_max")
    cleanup = result.cleanup

    def unread(why: str) -> Check:
        return Check("cleanup", math.nan, limit, "<=", unit="s", inconclusive=why)

    if cleanup is None:
        return unread(
            "no gauges of live resources were read: "
            + ("; ".join(result.notes) or "the app describes none (metrics.at_rest)")
        )
    if cleanup.error and not cleanup.last:
        return unread(f"gauges unreadable: {cleanup.error}")
    observed = cleanup.seconds
    detail = f"baseline {cleanup.baseline}, last reading {cleanup.last}"
    if math.isnan(observed):
        # Never back at rest within the wait: longer than the limit, by definition.
        observed = result.spec.cleanup_timeout_s
        detail = f"still above baseline after {observed:g} s: {cleanup.stuck}; " + detail
    return Check("cleanup", observed, limit, "<=", unit="s", detail=detail)


def rest_checks(result: RestScenarioResult, thresholds: Thresholds, users: int) -> list[Check]:
    """The REST scenario's criteria, each negative one standing on its positive control."""
    users_spec = thresholds.spec("concurrent_users_min")
    breaches_spec = thresholds.spec("isolation_breaches_max")
    assert users_spec.op is not None
    breach_op = breaches_spec.op
    assert breach_op is not None
    limit = thresholds.integer("isolation_breaches_max")
    counts = result.breach_counts()
    listed_ok = result.own_listed == result.own_expected_in_lists > 0
    read_ok = result.own_reads_ok == result.own_reads > 0
    errors = "; ".join(p for p in (result.describe_errors(), *result.notes) if p)

    def breaches(name: str, channels: tuple[str, ...], control: bool, why: str) -> Check:
        seen = sum(counts[c] for c in channels)
        return Check(
            name,
            seen,
            limit,
            breach_op,
            detail=result.describe_breaches(channels, EXAMPLES),
            # No breach seen proves something only where the user saw its own data there.
            inconclusive="" if seen > limit or control else why,
        )

    return unknown_where_lost(
        [
            Check(
                "detectable_leak_rate",
                detectable_rate(result.answers_scanned),
                thresholds.number("isolation_detectable_leak_rate_max"),
                "<=",
                detail=describe_power(result.answers_scanned),
                inconclusive="" if result.answers_scanned else "no answer was scanned",
            ),
            Check(
                users_spec.criterion,
                result.users_ready,
                users,
                users_spec.op,
                unit=users_spec.unit,
                detail=errors,
            ),
            Check(
                "own_items_listed",
                result.own_listed,
                result.own_expected_in_lists,
                ">=",
                unit="items",
                detail="each user must find its own items in its own listings; " + errors,
                inconclusive="" if result.own_expected_in_lists else "no user listed anything",
            ),
            Check(
                "own_items_read",
                result.own_reads_ok,
                result.own_reads,
                ">=",
                unit="reads",
                detail="each user must read its own items back, with its canary; " + errors,
                inconclusive="" if result.own_reads else "no user read an item by id",
            ),
            breaches(
                "cross_user_listings",
                ("list", "sub_list"),
                listed_ok,
                "the users' own items were not all listed, so an empty listing proves nothing",
            ),
            breaches(
                "cross_user_reads",
                ("read", "update"),
                read_ok,
                "the users' own items could not all be read back",
            ),
            Check(
                "resource_probes_answered",
                result.probes_refused + result.probes_served,
                result.probes_sent,
                ">=",
                unit="probes",
                detail=errors,
                inconclusive="" if result.probes_sent else "no probe was sent",
            ),
            breaches(
                "cross_user_resource_access",
                ("probe", "probe_sub_list", "probe_write"),
                read_ok and result.probes_unanswered == 0 and result.probes_sent > 0,
                f"{result.probes_unanswered} of {result.probes_sent} probes went unanswered",
            ),
        ],
        result.lost,
    )


def unknown_where_lost(checks: Sequence[Check], lost: Sequence[str]) -> list[Check]:
    """With a share of the users lost mid-run (its machine, its actor), what its users would
    have seen is unknown: every criterion that held is inconclusive, naming the loss, and so
    is the count of users (the lost share's are missing from it); a breach seen still fails."""
    if not lost:
        return list(checks)
    why = "; ".join(lost)
    return [
        replace(c, inconclusive=why)
        if not c.inconclusive
        and (c.name == "concurrent_users" or holds(c.observed, c.op, c.threshold))
        else c
        for c in checks
    ]
