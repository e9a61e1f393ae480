"""Deploying releases, the release that answers, the rollout description, the rollback command."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import pytest

from pytest_apex.app import DescriptionError, Release, load_description
from pytest_apex.app.model import FaultSwitches
from pytest_apex.reference import reference_description
from pytest_apex.rollback import cli
from pytest_apex.rollback.deploy import (
    CommandDeployer,
    ComposeDeployer,
    ContractRefused,
    DeployError,
    address_env,
    deployer_for,
    fault_env,
    refuse_contract,
    release_reader,
    wait_for_release,
)
from pytest_apex.rollback.rows import select_owned

V2 = Release(
    "v2",
    env=MappingProxyType({"RELEASE": "v2", "REVISION": "0002"}),
    recreate=("migrate", "backend"),
    schema="expand",
)


class RecordingTarget:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def recreate(self, services: Sequence[str], env: Mapping[str, str]) -> None:
        self.calls.append((tuple(services), dict(env)))


def test_a_compose_release_recreates_its_services_in_order_with_its_variables() -> None:
    target = RecordingTarget()
    deployer_for(V2, target).deploy(V2, {"FAULTS": "", "PORT": "49153"})
    assert target.calls == [
        (
            ("migrate", "backend"),
            {"RELEASE": "v2", "REVISION": "0002", "FAULTS": "", "PORT": "49153"},
        )
    ]


def test_a_release_with_a_command_runs_it_with_its_name_and_says_why_it_failed() -> None:
    ran: list[tuple[list[str], dict[str, str]]] = []

    def run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, str]:
        ran.append((list(argv), dict(env)))
        return 3, "helm: release not found"

    release = Release("v2", command=("helm", "rollback", "app", "{release}"))
    with pytest.raises(DeployError, match=r"helm rollback app v2` exited 3:\nhelm: release"):
        CommandDeployer(run=run).deploy(release, {"FAULTS": ""})
    assert ran == [(["helm", "rollback", "app", "v2"], {"FAULTS": ""})]


def test_a_compose_release_on_a_target_that_cannot_recreate_names_the_fix() -> None:
    class External:
        name = "external"

    with pytest.raises(DeployError, match="give the release a `command`"):
        deployer_for(V2, External())
    with pytest.raises(DeployError, match="no compose services"):
        ComposeDeployer(RecordingTarget()).deploy(Release("v3", command=("x",)), {})


def test_a_contract_release_is_refused_while_the_baseline_may_return() -> None:
    rollout = reference_description().rollout
    assert rollout is not None
    refuse_contract(rollout, rollout.releases["v2"])  # expand-only: fine
    with pytest.raises(ContractRefused, match="the baseline v1 could no longer run on it"):
        refuse_contract(rollout, rollout.releases["v2-contracted"])


def test_fault_switches_are_set_exactly_and_none_asked_of_an_app_without_them() -> None:
    switches = FaultSwitches("APP_FAULTS", ("slow", "leak"))
    assert fault_env(switches, ()) == {"APP_FAULTS": ""}
    assert fault_env(switches, ("slow", "leak")) == {"APP_FAULTS": "leak,slow"}
    assert fault_env(None, ()) == {}
    with pytest.raises(DeployError, match="describes no fault switches"):
        fault_env(None, ("slow",))


def test_the_address_is_kept_only_where_the_description_names_its_variable() -> None:
    rollout = reference_description().rollout
    assert rollout is not None
    assert address_env(rollout, "http://127.0.0.1:49153") == {"APEX_BACKEND_PORT": "49153"}
    assert address_env(rollout, "") == {}


def test_waiting_for_a_release_returns_its_time_or_says_what_answered_instead() -> None:
    answers = iter(["", "v2", "v2", "v1"])
    clock = itertools.count(0.0, 0.5)
    seconds = wait_for_release(
        lambda: next(answers), "v1", 10, clock=lambda: next(clock), pause=lambda _s: None
    )
    assert seconds == pytest.approx(2.0)  # one clock reading per answer after the start
    clock = itertools.count(0.0, 1.0)
    with pytest.raises(DeployError, match=r"within 3 s \(last seen: release 'v2'\)"):
        wait_for_release(lambda: "v2", "v1", 3, clock=lambda: next(clock), pause=lambda _s: None)


def test_the_release_reader_reads_the_liveness_field_and_takes_errors_for_not_yet() -> None:
    bodies = {"http://h:1/health/live": {"status": "pass", "build": {"release": "v2"}}}
    read = release_reader(bodies.__getitem__, "http://h:1/", "/health/live", "build.release")
    assert read() == "v2"
    broken = release_reader(bodies.__getitem__, "http://h:2", "/health/live", "build.release")
    assert broken() == ""


def test_owned_rows_are_selected_with_quoted_identifiers() -> None:
    rollout = reference_description().rollout
    assert rollout is not None
    threads = rollout.tables[0]
    assert select_owned(threads) == (
        'SELECT "id", "user_id", "title", "created_at" FROM "threads" '
        'WHERE "user_id"::text = ANY($1::text[])'
    )


BASE = {
    "name": "shop",
    "services": {"api": {"role": "api", "port": 8000}},
    "faults": {"env": "SHOP_FAULTS", "known": ["slow"]},
    "rollout": {
        "service": "api",
        "baseline": "v1",
        "releases": {"v1": {"recreate": ["api"]}, "v2": {"recreate": ["api"]}},
        "tables": {"orders": {"key": "id", "owner": "customer", "columns": ["id", "total"]}},
        "candidates": {"v2": {"release": "v2"}},
    },
}


def _with(**rollout: object) -> dict[str, object]:
    return {**BASE, "rollout": {**BASE["rollout"], **rollout}}  # type: ignore[dict-item]


def test_a_rollout_is_read_from_any_description() -> None:
    rollout = load_description(BASE, "apex.toml").rollout
    assert rollout is not None
    assert rollout.candidates[0].expect == "promote"
    assert rollout.tables[0].columns == ("id", "total")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"service": "apu"}, "rollout.service: 'apu' is not a described service"),
        ({"baseline": "v0"}, "rollout.baseline: 'v0' is not one of rollout.releases"),
        ({"candidates": {"x": {"release": "v3"}}}, "rollout.candidates.x.release: 'v3'"),
        ({"candidates": {"x": {"release": "v1"}}}, "the baseline cannot be its own candidate"),
        (
            {"candidates": {"x": {"release": "v2", "faults": ["slw"]}}},
            "'slw' is not a known fault",
        ),
        (
            {"releases": {"v1": {"recreate": ["api"], "command": ["x"]}, "v2": {"command": ["y"]}}},
            "rollout.releases.v1: give either `recreate`",
        ),
    ],
)
def test_a_wrong_rollout_is_refused_naming_the_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(DescriptionError, match=message.replace("(", r"\(")):
        load_description(_with(**change), "apex.toml")


def test_the_rollback_command_line_is_the_one_a_person_types() -> None:
    args = cli.command_line("apex-manual", [Path("stack.yml"), Path("two.yml")], "v1")
    assert cli.shown(args) == (
        "python -m pytest_apex.rollback --project apex-manual --file stack.yml --file two.yml "
        "--to v1"
    )


def test_the_rollback_command_refuses_an_unknown_release(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = cli.main(["--project", "p", "--file", "stack.yml", "--to", "v9"])
    assert status == 2
    assert "no release 'v9' in rollout.releases (v1, v2, v2-contracted)" in capsys.readouterr().err


def test_the_rollback_command_refuses_a_contract_release(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = cli.main(["--project", "p", "--file", "stack.yml", "--to", "v2-contracted"])
    assert status == 1
    assert "contracts the schema" in capsys.readouterr().err
