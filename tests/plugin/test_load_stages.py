"""Stage plans: schedules, shares across workers, validation."""

from __future__ import annotations

import pytest

from pytest_apex.load.stages import ClosedStage, OpenStage, closed_plan, open_plan, peak_users


def test_closed_plan_from_tuples_and_its_ramp() -> None:
    plan = closed_plan([(10, 20, 2), (150, 20, 5)])
    assert [s.users for s in plan] == [10, 150]
    assert plan[0].start_offsets()[:3] == pytest.approx([0.0, 0.2, 0.4])
    assert max(plan[1].start_offsets()) < 5
    assert peak_users(plan) == 150


def test_open_arrivals_are_scheduled_from_the_stage_start() -> None:
    stage = OpenStage(rate=4, duration_s=1.0)
    assert list(stage.arrivals(100.0)) == pytest.approx([100.0, 100.25, 100.5, 100.75])
    assert stage.target == 4
    assert open_plan([1, 2], 3)[1].target == 6


def test_shares_add_up_to_the_stage() -> None:
    stage = ClosedStage(users=7, duration_s=1, max_requests=100)
    shares = [stage.share(i, 3) for i in range(3)]
    assert sum(s.users for s in shares) == 7
    assert sum(s.max_requests for s in shares) == 100
    rate = OpenStage(rate=90, duration_s=1, max_concurrency=10).share(1, 3)
    assert rate.rate == pytest.approx(30)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClosedStage(-1, 1), "users"),
        (lambda: ClosedStage(1, 0), "duration"),
        (lambda: ClosedStage(1, 1, ramp_s=2), "ramp"),
        (lambda: ClosedStage(1, 1, max_requests=0), "max_requests"),
        (lambda: OpenStage(0, 1), "rate"),
        (lambda: OpenStage(1, float("inf")), "duration"),
    ],
)
def test_bad_stages_are_refused(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()
