"""pytest-apex's pytest hooks: options, markers, the run's lifecycle, xdist hand-off, summary.

Only wiring lives here. Settings are resolved in `pytest_apex.settings`, criteria and the
verdict are values from `pytest_apex.criteria`, the target is `pytest_apex.targets`, and
rendering is `pytest_apex.reporting`.

Under xdist the controller owns the run: it creates the target session (workers get its
`workerinput`), merges the criteria each worker sends with its test reports and at its end
(`pytest_apex.relay`, each counted once), writes the JSON report and the Allure environment
and categories, sets the exit status from the verdict (`pytest_apex.exitstatus`), prints the
summary and tears the target down.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final

import pytest

from pytest_apex import hookspec, recording, report_notes
from pytest_apex._stash import target_session_key, verdict_key
from pytest_apex.criteria import SUITES, Verdict
from pytest_apex.exitstatus import exit_status
from pytest_apex.redaction import RedactingFilter, redact
from pytest_apex.relay import WORKEROUTPUT_KEY, ControllerInbox, WorkerOutbox
from pytest_apex.reporting import allure as allure_report
from pytest_apex.reporting import json_report, load_report, terminal
from pytest_apex.settings import (
    ApexSettings,
    add_options,
    settings_from_pytest_config,
    settings_key,
)
from pytest_apex.settings.spelling import misread_rootdir
from pytest_apex.suites import collection as suite_collection
from pytest_apex.targets.base import Target

if TYPE_CHECKING:
    from pytest_apex.targets.lifecycle import TargetSession

# Fixture modules registered as plugins: the recorder, and the target/adapter layers.
_FIXTURE_MODULES: Final = (
    "pytest_apex.recording",
    "pytest_apex.fixtures",
    "pytest_apex.health.fixtures",
    "pytest_apex.suites.isolation_fixtures",
    "pytest_apex.suites.load_fixtures",
    "pytest_apex.suites.rollback_fixtures",
)

MARKERS: Final[dict[str, str]] = {
    "health": "health suite: services up and healthy, probes, container hardening, availability",
    "isolation": "isolation suite: no user ever sees another user's data, events or agents",
    "load": "load suite: staged concurrent users against the SLOs (p95, error rate, success rate)",
    "rollback": "rollback suite: the drill, decision matrix and post-rollback integrity checks",
    "soak": "soak suite: long runs for memory growth and sustained SLOs (24 h in staging)",
}
assert tuple(MARKERS) == SUITES, "markers and suites must stay in step"

_redacting_filter: Final = RedactingFilter()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _informational(config: pytest.Config) -> bool:
    # `--help`, `--version` and `--markers` configure plugins but run nothing: a bad threshold
    # in the ini file must not stop someone from reading the help that explains it.
    option = config.option
    return bool(
        getattr(option, "help", False)
        or getattr(option, "version", False)
        or getattr(option, "markers", False)
    )


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    if _informational(config):
        return

    misread = misread_rootdir(
        config.invocation_params.args,
        config.invocation_params.dir,
        config.inipath,
        config.rootpath,
    )
    if misread:
        raise pytest.UsageError(misread)
    settings = settings_from_pytest_config(config)  # UsageError on any bad value
    config.stash[settings_key] = settings
    # `pytest -m health` in any project: the shipped suites join what pytest collects.
    suite_collection.add_to_collection(config, SUITES)
    config.stash[verdict_key] = Verdict(profile=settings.profile)
    for module in _FIXTURE_MODULES:
        if not config.pluginmanager.has_plugin(module):
            # Plain import (not import_plugin): the entry point already marked the package
            # for assertion rewriting, and import_plugin warns about modules imported before.
            config.pluginmanager.register(importlib.import_module(module), module)
    config.stash[target_session_key] = config.hook.pytest_apex_target_session(
        settings=settings, config=config
    )
    run = ApexRun(config, settings)
    config.pluginmanager.register(run, "apex-run")
    if config.pluginmanager.hasplugin("xdist") and run.inbox is not None:
        # xdist's hooks are unknown without xdist: keep their implementations on an object
        # registered only when it is present (as xdist's docs recommend).
        config.pluginmanager.register(XdistHooks(config, run.inbox), "apex-xdist")


@pytest.hookimpl(trylast=True)
def pytest_apex_target_session(settings: ApexSettings, config: pytest.Config) -> TargetSession:
    """Default target session: the compose/external lifecycle of `pytest_apex.targets`."""
    # Imported here, not at the top: the lifecycle pulls in Docker tooling that --help,
    # the plugin's unit tests and user-supplied sessions never need.
    from pytest_apex.targets.lifecycle import TargetSession

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return TargetSession.from_workerinput(settings, workerinput)
    return TargetSession.for_controller(settings)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Runs on normal exit, on failures and after Ctrl-C (pytest unwinds KeyboardInterrupt;
    # the lifecycle turns SIGTERM into one), so the stack is torn down on all of them.
    session = config.stash.get(target_session_key, None)
    if session is not None and not _is_worker(config):
        session.finish()


class ApexRun:
    """The hooks of one configured run (registered in pytest_configure, not at import)."""

    def __init__(self, config: pytest.Config, settings: ApexSettings) -> None:
        self.config = config
        self.settings = settings
        self.verdict = config.stash[verdict_key]
        self.is_worker = _is_worker(config)
        # A worker relays its criteria to the process that owns the verdict, which receives
        # them (the controller; a single process receives nothing, but owns its verdict too).
        self.outbox = WorkerOutbox(self.verdict) if self.is_worker else None
        self.inbox = None if self.is_worker else ControllerInbox(self.verdict)
        # The load suite's stage tables (node id, rows), for the terminal summary.
        self.load_tables: list[tuple[str, list[dict[str, Any]]]] = []
        self.allure_dir = allure_report.results_dir(config)
        if self.allure_dir is not None:
            allure_report.install(config)

    def pytest_report_header(self) -> list[str]:
        settings = self.settings
        line = f"apex: profile {settings.profile}, target {settings.target_label}"
        if settings.is_external:
            # URLs may carry credentials (postgresql://user:password@…).
            urls = ", ".join(f"{s}={u}" for s, u in settings.urls.items())
            line += f" ({redact(urls)})"
        if settings.topology:
            line += f", topology {settings.topology}"
        if settings.faults:
            line += f", faults {','.join(settings.faults)}"
        if settings.executor != "local":
            line += f", executor {settings.executor} at {settings.ray_address or 'a new instance'}"
        overridden = sorted(settings.thresholds.overridden)
        if overridden:
            values = ", ".join(f"{n}={settings.thresholds[n]}" for n in overridden)
            line += f", thresholds {values}"
        return [line]

    def pytest_sessionstart(self) -> None:
        # Here rather than in pytest_configure: pytest's logging plugin creates its handlers
        # in its own (trylast) pytest_configure, which may run after ours.
        for handler in _logging_handlers(self.config):
            handler.addFilter(_redacting_filter)

    # --- tests ------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # A shipped suite test the project also collected itself runs once: the project's.
        twice = suite_collection.duplicates(items)
        if twice:
            dropped = set(map(id, twice))
            items[:] = [item for item in items if id(item) not in dropped]
            self.config.hook.pytest_deselected(items=twice)
        # Suites become Allure epics and parent suites, the top level of the report's tree.
        # Added at collection (tryfirst), so `--allure-epics=load`, which allure-pytest
        # applies in this same hook, can select by them.
        if self.allure_dir is None:
            return
        for item in items:
            suite = recording.suite_of(item)
            if suite and not allure_report.has_label(item, allure_report.SUITE_LABEL):
                for marker in allure_report.suite_markers(item, suite):
                    item.add_marker(marker)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        # Innermost wrapper (trylast): the report is cleaned before allure-pytest's wrapper
        # attaches captured output and failure text, and before the terminal prints them.
        report = yield
        _redact_report(report)
        recorded = any(c.test == item.nodeid for c in self.verdict.criteria)
        suite = recording.suite_of(item)
        inconclusive = report_notes.inconclusive_ending(report, call.excinfo, recorded)
        if inconclusive:
            self.config.hook.pytest_apex_test_inconclusive(item=item, reason=inconclusive)
        report_notes.attach(
            report,
            suite=suite,
            inconclusive=inconclusive,
            criteria=self.outbox.take_new() if self.outbox is not None else (),
        )
        if report.failed and report.when == "call" and self.allure_dir is not None:
            target = _target_used_by(item)
            if target is not None:
                allure_report.attach_service_logs(target)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Counted in every process; only the controller's (which sees its workers' reports
        # replayed) or the single process's counts reach the report.
        if self.inbox is not None:
            report_notes.observe(self.verdict, report)
            self.inbox.receive(report_notes.note_of(report).get("criteria", ()))
            if report.when == "call":
                # user_properties travel with the report from xdist workers (serialised).
                rows = load_report.rows_from_properties(report.user_properties)
                if rows is not None:
                    # A shipped suite test has no path in its id ("::test_…").
                    self.load_tables.append((report.nodeid.lstrip(":"), rows))
        if report.when == "call":
            outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
            self.verdict.count(outcome)
        elif report.failed:
            self.verdict.count("error")
        elif report.skipped:
            self.verdict.count("skipped")

    # --- end of the run ---------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # trylast: after the runner's own sessionfinish has torn down session fixtures, so
        # criteria recorded in their teardown are included.
        if self.outbox is not None:
            output = self.outbox.everything()
            # workeroutput: set by xdist on a worker's config, unknown to pytest's types.
            self.config.workeroutput[WORKEROUTPUT_KEY] = output  # type: ignore[attr-defined]
            return
        if self.config.option.collectonly:
            return
        target = self._describe_target()
        json_report.prepare(
            self.verdict,
            settings=self.settings,
            target=target,
            session_failed=exitstatus != pytest.ExitCode.OK,
        )
        self.config.hook.pytest_apex_verdict(verdict=self.verdict, config=self.config)
        json_report.write_report(self.verdict, self.settings.report)
        # Before the terminal summary (terminalreporter's sessionfinish wrapper prints it
        # after every implementation), and pytest.main returns session.exitstatus.
        session.exitstatus = exit_status(exitstatus, self.verdict, self.settings.inconclusive)
        if self.allure_dir is not None:
            properties = allure_report.environment(
                profile=self.settings.profile,
                target=target,
                commit=allure_report.git_commit(self.settings.rootdir),
                faults=self.settings.faults,
                topology=self.settings.topology,
            )
            allure_report.write_environment(self.allure_dir, properties)
            allure_report.write_categories(self.allure_dir)

    def _describe_target(self) -> dict[str, str]:
        session = self.config.stash.get(target_session_key, None)
        if session is None:
            return {}
        try:
            return dict(session.describe())
        except Exception as exc:  # the verdict must be written even when the target is broken
            return {"target.error": f"{type(exc).__name__}: {exc}"}

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.is_worker:
            return
        encoding = getattr(sys.stdout, "encoding", None)
        lines = terminal.render(
            self.verdict,
            None if self.config.option.collectonly else self.settings.report,
            unicode=terminal.can_encode("".join(terminal.UNICODE_MARKS.values()), encoding),
        )
        if not lines:
            return
        terminalreporter.write_sep("=", "apex criteria", bold=True)
        for line in lines:
            terminalreporter.write_line(
                line.text, green=line.green, red=line.red, yellow=line.yellow, bold=line.bold
            )
        for text in load_report.terminal_lines(self.load_tables):
            terminalreporter.write_line(text, bold=not text.startswith(" "))


def _redact_report(report: pytest.TestReport) -> None:
    report.sections = [(title, redact(content)) for title, content in report.sections]
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # a skip: (path, lineno, reason), a shape pytest relies on
        path, lineno, reason = longrepr
        report.longrepr = (path, lineno, redact(reason))
    elif longrepr is not None:
        text = report.longreprtext
        cleaned = redact(text)
        if cleaned != text:
            # Only reports that held a secret lose their rich formatting.
            report.longrepr = cleaned


def _target_used_by(item: pytest.Item) -> Target | None:
    # Only a test that used the target (directly or through a fixture built on it) gets its
    # logs: asking an unstarted session would start a stack just to read its logs.
    values = getattr(item, "funcargs", {}).values()
    return next((v for v in values if isinstance(v, Target)), None)


def _logging_handlers(config: pytest.Config) -> list[logging.Handler]:
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    names = ("caplog_handler", "report_handler", "log_file_handler", "log_cli_handler")
    return [h for h in (getattr(plugin, n, None) for n in names) if h is not None]


class XdistHooks:
    """Controller-side xdist hooks: hand the target to workers, collect their criteria."""

    def __init__(self, config: pytest.Config, inbox: ControllerInbox) -> None:
        self._config = config
        self._inbox = inbox

    def pytest_configure_node(self, node: Any) -> None:
        session = self._config.stash.get(target_session_key, None)
        if session is not None:
            node.workerinput.update(session.workerinput())

    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        # A worker that finished sends every criterion it recorded (those that came with its
        # reports are not counted twice). A crashed one sends nothing more: what it measured
        # arrived with its reports, and the crash itself fails the verdict, with a reason.
        output = getattr(node, "workeroutput", None) or {}
        self._inbox.receive(output.get(WORKEROUTPUT_KEY, ()))
        if error is not None:
            worker = getattr(getattr(node, "gateway", None), "id", "?")
            self._config.stash[verdict_key].run_failures.append(
                f"xdist worker {worker} crashed: {error}"
            )
