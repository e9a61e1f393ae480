"""The rollback drill catches what it claims to, on the fault stack itself (a compose target:
the drill redeploys the backend).

- Clean: each of the reference rollout's candidates reaches its decision (clean v2 promotes,
  v2 with shared_context rolls back by itself, v2 with slow_responses waits for a review),
  and after the rollback every row is there, unchanged, returned to its owner only.
- A rollback that restores the database from a backup taken before the drill (the classic
  "restore the snapshot" procedure) loses every row written since: `rows_lost` fails and
  names the rows' owners.
- A candidate whose migration contracts the schema is refused before anything changes.
- An analysis that measured nothing (every request of the load stages unmade, as when the
  scenario's routes vanished) pauses for a person: the clean candidate is not promoted.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from pytest_apex.reference import reference_description
from tests.conftest import FaultStack
from tests.proofs.conftest import ACCEPTANCE, attach_to, failed_criteria, outcomes, run_suite

pytestmark = pytest.mark.xdist_group("fault-stack")

ROLLBACK_SUITE: Final = ACCEPTANCE / "test_rollback.py"
DRILL_CRITERIA: Final = {
    "decision",
    "rows_lost",
    "rows_changed",
    "rows_returned_to_owner",
    "rows_returned_to_others",
    "release_answering",
    "isolation_violations",
}
AFTER_ROLLBACK: Final = {
    "rto_s",
    "rollback_outage_s",
    "post_rollback_p95",
    "post_rollback_error_rate",
    "post_rollback_memory_ratio",
    "post_rollback_connections",
}

CONTRACT_CANDIDATE: Final = """
[app.rollout.candidates.v2-contract]
release = "v2-contracted"
expect = "promote"
"""

# The child's conftest: the classic "restore the backup" rollback. It restores a dump of the
# database taken before the drill, in one transaction (the backend's writes wait for it
# instead of racing the restored tables' keys), then puts v1 back with the documented
# command. The users, threads and messages written since are gone; the drill must say whose.
RESTORING_ROLLBACK: Final = """
import pytest

from pytest_apex.suites.rollback_drill import run_rollback


def _psql_args(target):
    env = target.environment("postgres")
    return ["-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"]]


@pytest.fixture
def apex_roll_back(apex_target):
    args = _psql_args(apex_target)
    apex_target.exec("postgres", "pg_dump", *args, "-Fc", "-f", "/tmp/before-drill.dump")

    async def roll_back(release, decided_at):
        apex_target.exec(
            "postgres", "pg_restore", *args, "--clean", "--if-exists", "--single-transaction",
            "/tmp/before-drill.dump",
        )
        return await run_rollback(apex_target.project, apex_target.files, release, decided_at)

    return roll_back
"""


# The child's conftest: a load scenario that makes no request at all, so both canary stages
# (baseline and candidate) end without a single latency or error to judge.
SILENT_LOAD: Final = """
import pytest


class SilentSessions:
    async def open(self):
        pass

    async def probe(self, timeout_s):
        pass

    def session(self, user):
        return self

    async def run(self, ops):
        pass

    async def close(self):
        pass


@pytest.fixture
def apex_load_sessions():
    return SilentSessions()
"""


def _run_with_conftest(
    pytester: pytest.Pytester, fault_stack: FaultStack, conftest: str, candidates: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """The drill for `candidates` (a -k expression) in a project whose conftest.py is
    `conftest`: a conftest applies to the tests beside it, so the suite is collected here."""
    fault_stack.switch()
    pytester.makeconftest(conftest)
    own_copy = pytester.makepyfile(test_rollback=ROLLBACK_SUITE.read_text(encoding="utf-8"))
    return run_suite(
        pytester,
        own_copy,
        {},
        ["-m", "rollback", "-k", candidates, *attach_to(pytester, fault_stack.target)],
    )


def test_each_candidate_reaches_its_decision_and_no_row_is_lost(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    fault_stack.switch()
    result, report = run_suite(
        pytester, ROLLBACK_SUITE, {}, ["-m", "rollback", *attach_to(pytester, fault_stack.target)]
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    by_test: dict[str, dict[str, str]] = {}
    for criterion in report["criteria"]:
        candidate = re.search(r"\[(.+)\]$", criterion["test"])
        assert candidate is not None, criterion["test"]
        by_test.setdefault(candidate.group(1), {})[criterion["name"]] = criterion["outcome"]
    assert set(by_test) == {"v2", "v2-shared-context", "v2-slow-responses"}
    for candidate, seen in by_test.items():
        assert set(seen) >= DRILL_CRITERIA, (candidate, seen)
        assert set(seen.values()) == {"pass"}, (candidate, seen)
    assert set(by_test["v2-shared-context"]) >= AFTER_ROLLBACK
    assert not AFTER_ROLLBACK & set(by_test["v2"])  # promoted: nothing was rolled back


def test_a_rollback_that_restores_a_backup_loses_rows_and_names_their_owners(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = _run_with_conftest(
        pytester, fault_stack, RESTORING_ROLLBACK, "v2-shared-context"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    failed = {c["name"]: c for c in failed_criteria(report)}
    assert "rows_lost" in failed, outcomes(report)
    assert outcomes(report)["decision"] == "pass"  # the analysis was right; the data went
    output = result.stdout.str()
    lost = re.search(r"rows_lost .*?: (\d+) of (\d+) rows lost: (.*)", output)
    assert lost is not None, output
    assert int(lost.group(1)) > 0
    # Named by table and by owner (user ids), so a person knows whose data went.
    assert re.search(r"threads \d+ \(owners [0-9a-f-]{36} x\d+", lost.group(3)), lost.group(3)


def test_a_candidate_that_contracts_the_schema_is_refused_before_anything_changes(
    pytester: pytest.Pytester, fault_stack: FaultStack, tmp_path: Path
) -> None:
    fault_stack.switch()
    source = Path(reference_description().source)
    text = source.read_text(encoding="utf-8")
    text += (
        '\n[app.rollout.candidates.v2-contract]\nrelease = "v2-contracted"\nexpect = "promote"\n'
    )
    tomllib.loads(text)  # still a description
    description = pytester.path / "apex.toml"
    description.write_text(text, encoding="utf-8")
    result, _report = run_suite(
        pytester,
        ROLLBACK_SUITE,
        {},
        [
            "-m",
            "rollback",
            "-k",
            "v2-contract",
            f"--apex-app={description}",
            *attach_to(pytester, fault_stack.target),
        ],
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert "contracts the schema" in result.stdout.str()
    assert "the baseline v1 could no longer run on it" in result.stdout.str()
    urls = fault_stack.endpoints()
    assert httpx.get(urls["backend"] + "/health/live", timeout=10).json()["release"] == "v1"


def test_an_analysis_that_measured_nothing_pauses_instead_of_promoting(
    pytester: pytest.Pytester, fault_stack: FaultStack
) -> None:
    result, report = _run_with_conftest(
        pytester, fault_stack, SILENT_LOAD, "v2 and not shared and not slow"
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    assert outcomes(report)["decision"] == "fail", outcomes(report)
    output = result.stdout.str()
    decided = re.search(r"decision .*expected promote, decided (pause.*)", output)
    assert decided is not None, output
    # It says which measurements had nothing to judge, so a person knows what to look at.
    assert "canary" in decided.group(1), decided.group(1)
    urls = fault_stack.endpoints()
    assert httpx.get(urls["backend"] + "/health/live", timeout=10).json()["release"] == "v1"
