"""Allure output: criterion steps, suite epics, environment, categories, redacted attachments.

Criteria reach Allure through the plugin's own hooks (`AllureCriteria`): each one is a step
(passed, failed, or broken when it could not be judged), and a test that ended inconclusive
gets the status ``unknown`` instead of allure-pytest's ``skipped``, so nothing unproven
reads as passed. allure-pytest writes test results but no ``environment.properties`` or
``categories.json``; this module writes them once per run, from the controller, so xdist
workers never race on them. Everything attached goes through `redact` first. All of it is a
no-op unless ``--alluredir`` is given.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from uuid import uuid4

import allure
import allure_commons
import pytest
from allure_commons.model2 import Status
from allure_commons.types import AttachmentType

from pytest_apex.criteria import Criterion, format_number
from pytest_apex.redaction import redact
from pytest_apex.targets.base import Target

ENVIRONMENT_FILE: Final = "environment.properties"
CATEGORIES_FILE: Final = "categories.json"
# The label that marks a test which ended inconclusive (also shown in the report).
OUTCOME_LABEL: Final = "apex.outcome"
INCONCLUSIVE: Final = "inconclusive"
# The suite a test belongs to (health, isolation, load, rollback): hidden in the HTML report
# (allurerc.mjs), it files the test under its suite whatever its epic says.
SUITE_LABEL: Final = "apex.suite"

# Allure assigns a failed or broken result to the first category whose regex matches its
# message. Full-match-safe patterns (``[\s\S]*`` instead of ``.*``) work with both Allure 2
# (Java ``String.matches``) and Allure 3, across multi-line messages. The messages matched
# are `Criterion.message` (``AssertionError: load p95 2.41 s >= 2.00 s ...``) and the target's
# start errors (``stack failure: ...``, StackStartError, DockerUnavailable).
_CRITERION = r"AssertionError: (?:{suites}) \S+ [\s\S]*"
CATEGORIES: Final[tuple[dict[str, Any], ...]] = (
    {
        "name": "Isolation breach",
        "messageRegex": _CRITERION.format(suites="isolation")
        + r"|[\s\S]*\b(?:cross-user|isolation breach|leaked to)[\s\S]*",
        "matchedStatuses": ["failed"],
    },
    {
        "name": "SLO breach",
        "messageRegex": _CRITERION.format(suites="health|load|rollback|soak"),
        "matchedStatuses": ["failed"],
    },
    {
        "name": "Stack failure",
        "messageRegex": r"[\s\S]*(?:stack failure|StackStartError|DockerUnavailable"
        r"|did not become healthy|is unhealthy)[\s\S]*",
        "matchedStatuses": ["failed", "broken"],
    },
    {
        "name": "Inconclusive",
        "matchedStatuses": ["unknown"],
    },
    {
        "name": "Test defect",
        "matchedStatuses": ["broken"],
    },
)


def results_dir(config: pytest.Config) -> Path | None:
    """The ``--alluredir`` directory, or None when Allure output is off (or not installed)."""
    value = getattr(config.option, "allure_report_dir", None)
    return Path(os.path.abspath(value)) if value else None


def listening() -> bool:
    """Whether Allure results are being written (allure-pytest's listener is on)."""
    # True only while allure-pytest's listener is registered, i.e. with --alluredir.
    return bool(allure_commons.plugin_manager.hook.start_step.get_hookimpls())


# --- during tests ---------------------------------------------------------------------------


class CriterionInconclusive(Exception):
    """What an inconclusive criterion's step stops with: neither an assertion (failed) nor a
    skip (skipped), so allure-commons gives it the status ``broken``."""


def criterion_step(criterion: Criterion) -> None:
    """Record a criterion as one Allure step, with observed, threshold and outcome (pass, fail
    or inconclusive) as parameters, so the report reads them without its raw JSON.

    The step is failed when the criterion failed, whether or not the test then asserts, so
    the report shows every breach even for `record`-only criteria; it is broken when the
    criterion could not be judged, with the reason.
    """
    if not listening():
        return
    unit = f" {criterion.unit}" if criterion.unit else ""
    params = {
        "observed": f"{format_number(criterion.observed)}{unit}",
        "threshold": f"{criterion.op} {format_number(criterion.threshold)}{unit}",
        "outcome": criterion.outcome,
    }
    if criterion.stage:
        params["stage"] = criterion.stage.describe()
    hook = allure_commons.plugin_manager.hook
    uuid = uuid4()
    hook.start_step(uuid=uuid, title=criterion.message, params=params)
    error: Exception | None = None
    if criterion.failed:
        error = AssertionError(criterion.message)
    elif criterion.outcome == "inconclusive":
        error = CriterionInconclusive(criterion.message)
    hook.stop_step(
        uuid=uuid,
        title=criterion.message,
        exc_type=type(error) if error else None,
        exc_val=error,
        exc_tb=None,
    )


def mark_inconclusive() -> None:
    """Label the current test as inconclusive (`InconclusiveStatus` turns that into a status)."""
    if listening():
        allure.dynamic.label(OUTCOME_LABEL, INCONCLUSIVE)


class AllureCriteria:
    """The plugin's hooks rendered as Allure: a step per criterion, inconclusive tests marked.

    Registered (as a pytest plugin) in every process that writes results, with --alluredir.
    """

    def pytest_apex_criterion_recorded(
        self, criterion: Criterion, item: pytest.Item | None
    ) -> None:
        criterion_step(criterion)

    def pytest_apex_test_inconclusive(self, item: pytest.Item, reason: str) -> None:
        mark_inconclusive()


class InconclusiveStatus:
    """An allure-commons plugin: a test labelled inconclusive is written as ``unknown``.

    allure-pytest reports an `Inconclusive` (a skip) as skipped, and a skip after recording
    criteria too; neither may read as a plain skip of a test that did not apply.
    """

    @allure_commons.hookimpl
    def report_result(self, result: Any) -> None:
        if any(
            label.name == OUTCOME_LABEL and label.value == INCONCLUSIVE
            for label in result.labels or ()
        ):
            result.status = Status.UNKNOWN


def epic_marker(suite: str) -> pytest.MarkDecorator:
    """The marker allure-pytest reads as an epic label (what ``@allure.epic(suite)`` adds)."""
    return label_marker(suite, "epic")


def label_marker(value: str, label_type: str) -> pytest.MarkDecorator:
    """The marker allure-pytest reads as a label of `label_type` (``@allure.label``)."""
    return pytest.mark.allure_label(value, label_type=label_type)


def has_epic(item: pytest.Item) -> bool:
    return has_label(item, "epic")


def has_label(item: pytest.Item, label_type: str) -> bool:
    return any(m.kwargs.get("label_type") == label_type for m in item.iter_markers("allure_label"))


def suite_markers(item: pytest.Item, suite: str) -> list[pytest.MarkDecorator]:
    """The labels that put a suite's test under its suite in the report.

    The suite is the test's epic and parent suite (unless the test set its own: a project's
    labels win) and, whatever those say, its ``apex.suite`` label, which `SuiteTitlePath`
    reads to make the suite the top level of Allure 3's tree.
    """
    markers = [label_marker(suite, SUITE_LABEL)]
    if not has_label(item, "epic"):
        markers.append(epic_marker(suite))
    if not has_label(item, "parentSuite"):
        markers.append(label_marker(suite, "parentSuite"))
    return markers


class SuiteTitlePath:
    """An allure-commons plugin: a suite's test is filed under its suite in Allure 3's tree.

    Allure 3 builds its tree from each result's ``titlePath``, which allure-pytest makes of
    the test file's path (``tests/acceptance/test_health.py``), so every suite sat in one
    ``tests`` folder. The path becomes the suite, then the file and its classes.
    """

    @allure_commons.hookimpl
    def report_result(self, result: Any) -> None:
        suite = next(
            (label.value for label in result.labels or () if label.name == SUITE_LABEL), None
        )
        if suite:
            result.titlePath = suite_title_path(suite, list(result.titlePath or ()))


def suite_title_path(suite: str, title_path: list[str]) -> list[str]:
    """``[suite, file, classes...]`` from allure-pytest's ``[dirs..., file, classes...]``."""
    files = [i for i, part in enumerate(title_path) if part.endswith(".py")]
    rest = title_path[files[0] :] if files else title_path[-1:]
    return [suite, *rest]


def attach_text(name: str, text: str) -> None:
    """Attach text to the current test (or step), credentials redacted."""
    if listening():
        allure.attach(redact(text), name=name, attachment_type=AttachmentType.TEXT)


def attach_service_logs(
    target: Target, services: Iterable[str] | None = None, tail: int = 200
) -> None:
    """Attach the last `tail` log lines of each service of `target` (all by default)."""
    if not listening():
        return
    if services is not None:
        names = list(services)
    else:
        try:
            names = [c.service for c in target.containers()]
        except Exception as exc:  # a Docker that cannot answer must not crash the report hook
            attach_text("service logs", f"<services unavailable: {exc}>")
            return
    for service in names:
        try:
            text = target.logs(service, tail=tail)
        except Exception as exc:  # a dying stack must not hide the test's own failure
            text = f"<logs unavailable: {exc}>"
        if text:
            attach_text(f"{service} logs (last {tail} lines)", text)


class ResultRedactor:
    """An allure-commons plugin that redacts each result just before it is written.

    Failure messages and traces come straight from the exception (``excinfo.exconly()``), so
    redacting pytest's report is not enough: a token in an assertion message would reach
    ``*-result.json``. Registered in every process that writes results (xdist workers too).
    """

    @allure_commons.hookimpl(tryfirst=True)
    def report_result(self, result: Any) -> None:
        _redact_executable(result)

    @allure_commons.hookimpl(tryfirst=True)
    def report_container(self, container: Any) -> None:
        for fixture in [*container.befores, *container.afters]:
            _redact_executable(fixture)


def _redact_executable(item: Any) -> None:
    details = item.statusDetails
    if details is not None:
        details.message = redact(details.message) if details.message else details.message
        details.trace = redact(details.trace) if details.trace else details.trace
    for parameter in item.parameters or ():
        if isinstance(parameter.value, str):
            parameter.value = redact(parameter.value)
    for step in item.steps or ():
        step.name = redact(step.name) if isinstance(step.name, str) else step.name
        _redact_executable(step)


def install(config: pytest.Config) -> None:
    """Render criteria into, and redact, every Allure result this process writes, until the
    config is cleaned up."""
    config.pluginmanager.register(AllureCriteria(), "apex-allure")
    for plugin in (ResultRedactor(), InconclusiveStatus(), SuiteTitlePath()):
        allure_commons.plugin_manager.register(plugin)
        config.add_cleanup(functools.partial(allure_commons.plugin_manager.unregister, plugin))


# --- at the end of the run (controller only) ------------------------------------------------


def git_commit(cwd: Path) -> str:
    """The commit under test: from CI's variables, else ``git rev-parse``, else "unknown"."""
    for var in ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT", "BUILD_VCS_NUMBER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def environment(
    *,
    profile: str,
    target: Mapping[str, str],
    commit: str,
    faults: Iterable[str] = (),
    topology: str = "",
) -> dict[str, str]:
    """The properties Allure shows on its overview page."""
    properties = {
        "profile": profile,
        "git.commit": commit,
        "python": platform.python_version(),
        "pytest": pytest.__version__,
    }
    faults = list(faults)
    if faults:
        properties["apex.faults"] = ",".join(faults)
    if topology:
        properties["apex.topology"] = topology
    properties.update(target)  # "target", "image.<service>", ... from the target session
    return properties


def _escape_property(text: str, *, key: bool = False) -> str:
    # Java .properties escaping: backslash, line breaks, and (in keys) separators.
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if key:
        for char in " =:#!":
            text = text.replace(char, "\\" + char)
    return text


def write_environment(directory: Path, properties: Mapping[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{_escape_property(k, key=True)}={_escape_property(redact(str(v)))}"
        for k, v in sorted(properties.items())
    ]
    path = directory / ENVIRONMENT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_categories(directory: Path) -> Path:
    """Write the categories, keeping (ahead of ours) any a user put there under other names."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CATEGORIES_FILE
    ours = {c["name"] for c in CATEGORIES}
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
        kept = [c for c in existing if isinstance(c, dict) and c.get("name") not in ours]
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        kept = []
    path.write_text(json.dumps([*kept, *CATEGORIES], indent=2) + "\n", encoding="utf-8")
    return path
