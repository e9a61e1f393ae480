"""Options, ini twins, profiles and the usage errors of bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_apex.reference import FAULTS_ENV, KNOWN_FAULTS
from pytest_apex.rollback.matrix import DecisionMatrix
from pytest_apex.settings import (
    PROFILES,
    THRESHOLDS,
    ApexSettings,
    RawOptions,
    Thresholds,
    resolve,
    settings_key,
)
from tests.plugin.conftest import ApexPytester

OPTIONS = {
    "--apex-stack": "apex_stack",
    "--apex-url": "apex_urls",
    "--apex-profile": "apex_profile",
    "--apex-keep": "apex_keep",
    "--apex-reuse": "apex_reuse",
    "--apex-report": "apex_report",
    "--apex-threshold": "apex_thresholds",
    "--apex-faults": "apex_faults",
    "--apex-app": "apex_app",
    "--apex-inconclusive": "apex_inconclusive",
    "--apex-topology": "apex_topology",
    "--apex-seed": "apex_seed",
    "--apex-load-workers": "apex_load_workers",
    "--apex-decision-matrix": "apex_decision_matrix",
}


def _resolve(tmp_path: Path, *, cli: dict | None = None, ini: dict | None = None) -> ApexSettings:
    return resolve(
        RawOptions(source="cli", base=tmp_path, **(cli or {})),
        RawOptions(source="ini", base=tmp_path, **(ini or {})),
        rootdir=tmp_path,
    )


def _settings(apex: ApexPytester, *args: str) -> ApexSettings:
    return apex.configure(*args).stash[settings_key]


# --- help and markers -------------------------------------------------------------------------


def test_help_documents_every_option_and_its_ini_twin(apex: ApexPytester) -> None:
    result = apex.run("--help")
    assert result.ret == 0
    out = " ".join(result.stdout.str().split())  # help text is wrapped at any space
    assert "pytest-apex" in out
    for flag, ini in OPTIONS.items():
        assert flag in out
        assert f"{ini} (" in out  # the ini section lists "apex_stack (string): ..."
        assert f"[ini: {ini}]" in out


def test_help_works_despite_bad_configuration(apex: ApexPytester) -> None:
    apex.pytester.makeini("[pytest]\napex_profile = nope\napex_stack = missing.yml\n")
    assert apex.run("--help").ret == 0


def test_markers_are_registered_with_help(apex: ApexPytester) -> None:
    result = apex.run("--markers")
    for suite in ("health", "isolation", "load", "rollback", "soak"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{suite}: {suite} suite: *"])


def test_strict_markers_accepts_the_suite_markers(apex: ApexPytester) -> None:
    apex.pytester.makepyfile(
        """
        import pytest

        @pytest.mark.health
        @pytest.mark.isolation
        @pytest.mark.load
        @pytest.mark.rollback
        @pytest.mark.soak
        def test_marked():
            pass
        """
    )
    apex.run("--strict-markers").assert_outcomes(passed=1)


# --- defaults, ini twins, CLI over ini --------------------------------------------------------


def test_defaults_without_configuration(apex: ApexPytester) -> None:
    settings = _settings(apex)
    assert settings.profile == "ci"
    assert settings.stack is None
    assert dict(settings.urls) == {}
    assert not settings.is_external
    assert (settings.keep, settings.reuse) == (False, False)
    assert settings.report == apex.path / ".apex" / "report.json"
    assert settings.faults == ()
    assert settings.rootdir == apex.path
    assert settings.thresholds["p95_s_max"] == 2.0


def test_every_ini_twin_is_read(apex: ApexPytester) -> None:
    (apex.path / "stack").mkdir()
    (apex.path / "stack" / "compose.yml").write_text("services: {}\n")
    apex.pytester.makeini(
        """
        [pytest]
        apex_stack = stack/compose.yml
        apex_urls =
            backend=http://127.0.0.1:8000/
            auth=http://127.0.0.1:8081
        apex_profile = staging
        apex_keep = true
        apex_reuse = true
        apex_report = out/verdict.json
        apex_thresholds =
            p95_s_max = 1.5
            availability_min = 99.5%
        """
    )
    settings = _settings(apex)
    assert settings.stack == apex.path / "stack" / "compose.yml"
    assert dict(settings.urls) == {
        "backend": "http://127.0.0.1:8000",
        "auth": "http://127.0.0.1:8081",
    }
    assert settings.is_external
    assert settings.profile == "staging"
    assert (settings.keep, settings.reuse) == (True, True)
    assert settings.report == apex.path / "out" / "verdict.json"
    assert settings.thresholds["p95_s_max"] == 1.5
    assert settings.thresholds["availability_min"] == pytest.approx(0.995)
    assert settings.thresholds.overridden == {"p95_s_max", "availability_min"}


def test_faults_ini_twin_is_read(apex: ApexPytester) -> None:
    # Apart from the test above: a reused stack refuses fault switches.
    apex.pytester.makeini("[pytest]\napex_faults = idor, memory_leak\n")
    assert _settings(apex).faults == ("idor", "memory_leak")


def test_faults_environment_twin_is_honoured(
    apex: ApexPytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reference stack's README documents `APEX_FAULTS=idor pytest -m isolation`: the
    # plugin once replaced it with its own empty list and tested a clean stack.
    monkeypatch.setenv(FAULTS_ENV, "idor")
    assert _settings(apex).faults == ("idor",)


def test_faults_precedence_is_cli_then_environment_then_ini(
    apex: ApexPytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    apex.pytester.makeini("[pytest]\napex_faults = memory_leak\n")
    monkeypatch.setenv(FAULTS_ENV, "idor")
    assert _settings(apex).faults == ("idor",)
    assert _settings(apex, "--apex-faults=error_burst").faults == ("error_burst",)
    monkeypatch.setenv(FAULTS_ENV, "")  # set but empty: a clean stack, whatever the ini says
    assert _settings(apex).faults == ()
    monkeypatch.delenv(FAULTS_ENV)
    assert _settings(apex).faults == ("memory_leak",)


def test_unknown_fault_in_the_environment_names_the_variable(
    apex: ApexPytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "idorr")
    message = _usage_error(apex)
    assert message.startswith(f"apex: {FAULTS_ENV} (environment): unknown fault 'idorr'")


NOTES_APP = """
[app]
name = "notes"
faults = { env = "NOTES_BUGS", known = ["notebook_idor"] }
services = { api = { role = "api" } }
"""


def test_without_a_description_the_reference_stack_is_described(apex: ApexPytester) -> None:
    assert _settings(apex).app.name == "apex"


def test_the_projects_own_description_is_found_beside_the_ini(apex: ApexPytester) -> None:
    apex.pytester.makefile(".toml", apex=NOTES_APP)
    assert _settings(apex).app.name == "notes"


def test_an_invalid_description_stops_the_run_naming_the_key(apex: ApexPytester) -> None:
    apex.pytester.makefile(".toml", apex=NOTES_APP.replace('role = "api"', 'role = "apii"'))
    message = _usage_error(apex)
    assert message.startswith("apex: app description: the app description (")
    assert "services.api.role: 'apii' is not accepted (did you mean 'api'?)" in message


def test_apex_app_names_a_description_file(apex: ApexPytester) -> None:
    apex.pytester.makefile(".toml", notes=NOTES_APP)
    assert _settings(apex, "--apex-app=notes.toml").app.name == "notes"
    message = _usage_error(apex, "--apex-app=missing.toml")
    assert message.startswith("apex: --apex-app: app description ")
    assert "missing.toml does not exist" in message


def test_faults_are_the_apps_own_with_its_variable_as_environment_twin(
    apex: ApexPytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    apex.pytester.makefile(".toml", apex=NOTES_APP)
    monkeypatch.setenv("NOTES_BUGS", "notebook_idor")
    monkeypatch.setenv(FAULTS_ENV, "idor")  # the reference stack's variable means nothing here
    assert _settings(apex).faults == ("notebook_idor",)
    message = _usage_error(apex, "--apex-faults=idor")
    assert "unknown fault 'idor'" in message
    assert "accepted: notebook_idor" in message


def test_an_app_without_fault_switches_refuses_them(apex: ApexPytester) -> None:
    apex.pytester.makefile(".toml", apex=NOTES_APP.replace("faults = {", "# faults = {"))
    message = _usage_error(apex, "--apex-faults=idor")
    assert "declares no fault switches" in message


def test_command_line_wins_over_ini(apex: ApexPytester, tmp_path: Path) -> None:
    apex.pytester.makeini(
        """
        [pytest]
        apex_urls = backend=http://ini.example:8000
        apex_profile = staging
        apex_report = ini.json
        apex_thresholds =
            p95_s_max = 1.5
            error_rate_max = 0.02
        apex_faults = idor
        """
    )
    settings = _settings(
        apex,
        "--apex-url=backend=http://cli.example:8000",
        "--apex-url=auth=http://cli.example:8081",
        "--apex-profile=ci",
        f"--apex-report={tmp_path / 'cli.json'}",
        "--apex-threshold=p95_s_max=1.0",
        "--apex-faults=slow_responses",
    )
    # The URL list is replaced as a whole; thresholds merge name by name.
    assert dict(settings.urls) == {
        "backend": "http://cli.example:8000",
        "auth": "http://cli.example:8081",
    }
    assert settings.profile == "ci"
    assert settings.report == tmp_path / "cli.json"
    assert settings.thresholds["p95_s_max"] == 1.0
    assert settings.thresholds["error_rate_max"] == 0.02
    assert settings.faults == ("slow_responses",)


def test_cli_flags_set_booleans(apex: ApexPytester) -> None:
    settings = _settings(apex, "--apex-keep", "--apex-reuse")
    assert (settings.keep, settings.reuse) == (True, True)


def test_relative_cli_paths_resolve_against_the_invocation_directory(tmp_path: Path) -> None:
    compose = tmp_path / "here" / "compose.yml"
    compose.parent.mkdir()
    compose.write_text("services: {}\n")
    settings = resolve(
        RawOptions(source="cli", base=tmp_path / "here", stack="compose.yml", report="r.json"),
        RawOptions(source="ini", base=tmp_path / "ini-dir"),
        rootdir=tmp_path,
    )
    assert settings.stack == compose
    assert settings.report == tmp_path / "here" / "r.json"
    assert settings.target_label == f"compose:{compose}"


def test_the_decision_matrix_is_the_shipped_one_unless_a_file_is_named(apex: ApexPytester) -> None:
    assert _settings(apex).decision_matrix == DecisionMatrix.default()
    apex.pytester.makefile(
        ".toml",
        ini_matrix='[inconclusive]\naction = "rollback"\n',
        cli_matrix="[issues.performance_degradation]\nauto_rollback = true\n",
    )
    apex.pytester.makeini("[pytest]\napex_decision_matrix = ini_matrix.toml\n")
    from_ini = _settings(apex).decision_matrix
    assert from_ini.inconclusive == "rollback"
    assert from_ini.sources[-1] == apex.path / "ini_matrix.toml"
    # the command line wins, and its file too keeps the shipped rows it does not change
    from_cli = _settings(apex, "--apex-decision-matrix=cli_matrix.toml").decision_matrix
    assert from_cli.inconclusive == "pause"
    assert from_cli.issue("performance_degradation").auto_rollback
    assert from_cli.overridden == {"performance_degradation"}


def test_a_relative_decision_matrix_resolves_against_its_source(tmp_path: Path) -> None:
    (tmp_path / "ini-dir").mkdir()
    (tmp_path / "ini-dir" / "m.toml").write_text('[inconclusive]\naction = "rollback"\n')
    settings = resolve(
        RawOptions(source="cli", base=tmp_path / "here"),
        RawOptions(source="ini", base=tmp_path / "ini-dir", decision_matrix="m.toml"),
        rootdir=tmp_path,
    )
    assert settings.decision_matrix.sources[-1] == tmp_path / "ini-dir" / "m.toml"


def test_a_bad_decision_matrix_stops_the_run_naming_the_key_and_the_field(
    apex: ApexPytester,
) -> None:
    apex.pytester.makefile(".toml", matrix='[issues.memory_leak]\nseverity = "hihg"\n')
    message = _usage_error(apex, "--apex-decision-matrix=matrix.toml")
    assert message.startswith(f"apex: --apex-decision-matrix: {apex.path / 'matrix.toml'}: ")
    assert "[issues.memory_leak] severity: unknown severity 'hihg' (did you mean high?)" in message
    apex.pytester.makeini("[pytest]\napex_decision_matrix = missing.toml\n")
    message = _usage_error(apex)
    assert message.startswith("apex: apex_decision_matrix: ")
    assert "missing.toml: no such decision matrix file" in message
    assert "relative to the ini file" in message


# --- profiles and thresholds -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "stage", "soak", "interval"),
    [("ci", 20, 60, 0), ("staging", 3600, 86400, 21600)],
)
def test_profiles_set_durations(
    apex: ApexPytester, profile: str, stage: float, soak: float, interval: float
) -> None:
    thresholds = _settings(apex, f"--apex-profile={profile}").thresholds
    assert thresholds.seconds("stage_duration_s") == stage
    assert thresholds.seconds("soak_duration_s") == soak
    assert thresholds.seconds("load_interval_s") == interval
    # The criteria themselves do not depend on the profile.
    assert thresholds.number("p95_s_max") == 2.0
    assert thresholds.stages() == (10, 25, 50, 100, 150)


def test_threshold_table_has_the_report_criteria() -> None:
    thresholds = Thresholds.defaults()
    expected = {
        "availability_min": 0.999,
        "p95_s_max": 2.0,
        "error_rate_max": 0.01,
        "concurrent_users_min": 150,
        "isolation_breaches_max": 0,
        "isolation_run_p95_s_max": 10.0,
        "isolation_cleanup_s_max": 30.0,
        "isolation_detectable_leak_rate_max": 0.001,
        "isolation_rounds": 3,
        "memory_variance_max": 0.05,
        "memory_slope_kb_per_h_max": 131072,
        "memory_warmup_s": 10.0,
        "memory_sample_s": 1.0,
        "availability_probe_s": 1.0,
        "soak_users": 25,
        "success_rate_min": 0.95,
        "avg_response_s_max": 3.0,
        "health_response_s_max": 0.5,
        "load_stages": (10, 25, 50, 100, 150),
        "stage_duration_s": 20,
        "soak_duration_s": 60,
        "load_interval_s": 0,
        "load_think_s": 1.0,
        "load_window_s": 10.0,
        "prometheus_wait_s": 15.0,
        "load_agent_p95_s_max": 10.0,
        "canary_users": 8,
        "canary_stage_s": 8.0,
        "canary_tolerance": 0.25,
        "canary_min_shift_s": 0.05,
        "rollback_seed_users": 6,
        "rollback_rto_s_max": 60.0,
        "rollback_p95_window_s": 300.0,
        "rollback_error_window_s": 600.0,
        "rollback_memory_window_s": 900.0,
        "rollback_connections_window_s": 300.0,
        "rollback_p95_s_max": 3.0,
        "rollback_error_rate_max": 0.02,
        "rollback_memory_ratio_max": 0.75,
        "rollback_connections_max": 200,
    }
    assert dict(thresholds) == expected
    assert thresholds.integer("concurrent_users_min") == 150
    assert thresholds.spec("p95_s_max").op == "<"
    assert thresholds.spec("concurrent_users_min").op == ">="


@pytest.mark.parametrize(
    ("entry", "value"),
    [
        ("p95_s_max=1.5", 1.5),
        ("p95_s_max=500ms", 0.5),
        ("stage_duration_s=30m", 1800.0),
        ("soak_duration_s=1h", 3600.0),
        ("availability_min=99.9%", 0.999),
        ("concurrent_users_min=200", 200),
        ("load_stages=5, 10,20", (5, 10, 20)),
    ],
)
def test_threshold_values_parse_by_kind(tmp_path: Path, entry: str, value: object) -> None:
    name = entry.partition("=")[0]
    settings = _resolve(tmp_path, cli={"thresholds": [entry]})
    assert settings.thresholds[name] == pytest.approx(value)


def test_typed_accessors_refuse_the_wrong_kind() -> None:
    thresholds = Thresholds.defaults()
    with pytest.raises(TypeError, match="list"):
        thresholds.number("load_stages")
    with pytest.raises(TypeError, match="whole number"):
        thresholds.integer("p95_s_max")
    with pytest.raises(KeyError, match="did you mean p95_s_max"):
        thresholds["p95_max"]


# --- usage errors ----------------------------------------------------------------------------


def _usage_error(apex: ApexPytester, *args: str) -> str:
    with pytest.raises(pytest.UsageError) as excinfo:
        apex.configure(*args)
    return str(excinfo.value)


def test_unknown_profile_names_the_key_and_the_profiles(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-profile=prod")
    assert "--apex-profile" in message
    assert "'prod'" in message
    assert f"accepted: {', '.join(PROFILES)}" in message


def test_unknown_profile_from_ini_names_the_ini_key(apex: ApexPytester) -> None:
    apex.pytester.makeini("[pytest]\napex_profile = stagin\n")
    message = _usage_error(apex)
    assert message.startswith("apex: apex_profile:")
    assert "did you mean staging?" in message


def test_inconclusive_policy_defaults_to_fail_and_reads_its_ini_twin(apex: ApexPytester) -> None:
    assert _settings(apex).inconclusive == "fail"
    apex.pytester.makeini("[pytest]\napex_inconclusive = pass\n")
    assert _settings(apex).inconclusive == "pass"
    assert _settings(apex, "--apex-inconclusive=fail").inconclusive == "fail"


def test_unknown_inconclusive_policy_names_the_key_and_the_values(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-inconclusive=passs")
    assert message.startswith("apex: --apex-inconclusive: unknown value 'passs'")
    assert "did you mean pass?" in message
    assert message.endswith("accepted: fail, pass")


def test_help_documents_the_exit_codes_of_a_verdict(apex: ApexPytester) -> None:
    out = " ".join(apex.run("--help").stdout.str().split())
    assert "fail exits 6, so a required CI check stays red" in out
    assert "pass exits 0" in out
    assert "(default: fail) [ini: apex_inconclusive]" in out
    assert "A failed criterion exits 1" in out


def test_unknown_threshold_lists_the_names_and_suggests_one(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-threshold=p95_max=1")
    assert "--apex-threshold" in message
    assert "unknown threshold 'p95_max'" in message
    assert "did you mean p95_s_max?" in message
    assert all(name in message for name in THRESHOLDS)


def test_malformed_threshold_value_names_the_key_and_the_expected_form(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-threshold=p95_s_max=fast")
    assert "--apex-threshold p95_s_max" in message
    assert "'fast'" in message
    assert "a duration in seconds" in message


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("availability_min=1.5", "a ratio from 0 to 1"),
        ("concurrent_users_min=1.5", "a whole number"),
        ("load_stages=10,x", "comma-separated whole numbers"),
        ("error_rate_max=-0.1", "a ratio from 0 to 1"),
        ("memory_slope_kb_per_h_max=nan", "a number >= 0"),
        ("p95_s_max", "NAME=VALUE"),
    ],
)
def test_malformed_thresholds_from_ini(tmp_path: Path, entry: str, expected: str) -> None:
    with pytest.raises(pytest.UsageError, match="apex_thresholds") as excinfo:
        _resolve(tmp_path, ini={"thresholds": [entry]})
    assert expected in str(excinfo.value)


def test_url_without_equals_sign(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-url=http://127.0.0.1:8000")
    assert "--apex-url" in message
    assert "SERVICE=URL" in message


def test_url_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="backend: 'localhost:8000' is not an absolute URL"):
        _resolve(tmp_path, cli={"urls": ["backend=localhost:8000"]})


def test_unknown_fault_lists_the_known_ones(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-faults=idor,memleak")
    assert "--apex-faults" in message
    assert "unknown fault 'memleak'" in message
    assert "did you mean memory_leak?" in message
    assert f"accepted: {', '.join(KNOWN_FAULTS)}" in message


def test_missing_compose_file_names_the_key(apex: ApexPytester) -> None:
    apex.pytester.makeini("[pytest]\napex_stack = fixtures/nope.yml\n")
    message = _usage_error(apex)
    assert "apex: apex_stack:" in message
    assert str(apex.path / "fixtures" / "nope.yml") in message
    assert "--apex-url" in message  # the alternative is offered


def test_missing_compose_file_is_fine_for_an_external_target(apex: ApexPytester) -> None:
    apex.pytester.makeini("[pytest]\napex_stack = fixtures/nope.yml\n")
    settings = _settings(apex, "--apex-url=backend=https://staging.example.com")
    assert settings.is_external
    assert settings.target_label == "external"


def test_a_usage_error_stops_the_run_before_any_test(apex: ApexPytester) -> None:
    apex.pytester.makepyfile("def test_never():\n    raise SystemExit('ran')\n")
    result = apex.run("--apex-threshold=p95_s_max=fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: apex: --apex-threshold p95_s_max: 'fast' is not valid*"])


def test_report_header_shows_profile_target_and_overrides(apex: ApexPytester) -> None:
    apex.pytester.makepyfile("def test_ok():\n    pass\n")
    result = apex.run(
        "--apex-profile=staging",
        "--apex-url=backend=https://staging.example.com",
        "--apex-threshold=p95_s_max=1.5",
        "--apex-faults=idor",
    )
    result.stdout.fnmatch_lines(
        [
            "apex: profile staging, target external (backend=https://staging.example.com), "
            "faults idor, thresholds p95_s_max=1.5"
        ]
    )


def test_reuse_refuses_fault_switches_it_could_not_apply(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-reuse", "--apex-faults=idor")
    assert message.startswith("apex: --apex-reuse:")
    assert "idor" in message


def test_report_header_redacts_credentials_in_urls(apex: ApexPytester) -> None:
    apex.pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    apex.pytester.makepyfile("def test_nothing():\n    pass\n")
    result = apex.pytester.runpytest(
        "--apex-url=postgres=postgresql://apex:hunter2-secret@127.0.0.1:5432/apex"
    )
    header = result.stdout.str()
    assert "apex: profile ci, target external" in header
    assert "hunter2-secret" not in header


# --- topologies -------------------------------------------------------------------------------


def test_topology_defaults_to_the_base_stack(apex: ApexPytester) -> None:
    settings = _settings(apex)
    assert (settings.topology, settings.selected_topology) == ("", None)


def test_topology_is_read_from_its_ini_twin_and_the_command_line_wins(
    apex: ApexPytester,
) -> None:
    apex.pytester.makeini("[pytest]\napex_topology = two_backends\n")
    settings = _settings(apex)
    assert settings.topology == "two_backends"
    assert settings.selected_topology is settings.app.topologies["two_backends"]
    app = """
[app]
name = "notes"
services = { api = { role = "api" } }
topologies = { one = {}, two = { replicas = { api = 2 } } }
"""
    apex.pytester.makefile(".toml", apex=app)
    apex.pytester.makeini("[pytest]\napex_topology = one\n")
    assert _settings(apex).topology == "one"
    assert _settings(apex, "--apex-topology=two").topology == "two"


def test_an_unknown_topology_names_the_key_and_the_known_ones(apex: ApexPytester) -> None:
    message = _usage_error(apex, "--apex-topology=two_backend")
    assert message.startswith("apex: --apex-topology: unknown topology 'two_backend'")
    assert "did you mean two_backends?" in message
    assert message.endswith("accepted: two_backends")
    apex.pytester.makeini("[pytest]\napex_topology = nope\n")
    assert _usage_error(apex).startswith("apex: apex_topology: unknown topology 'nope'")


def test_an_app_without_topologies_says_it_declares_none(apex: ApexPytester) -> None:
    apex.pytester.makefile(".toml", apex=NOTES_APP)
    message = _usage_error(apex, "--apex-topology=two_backends")
    assert "the app description of notes declares no topologies" in message


def test_report_header_and_verdict_name_the_topology(apex: ApexPytester) -> None:
    apex.pytester.makepyfile("def test_ok():\n    pass\n")
    result = apex.run(
        "--apex-url=backend=https://staging.example.com", "--apex-topology=two_backends"
    )
    result.stdout.fnmatch_lines(
        [
            "apex: profile ci, target external (backend=https://staging.example.com), "
            "topology two_backends"
        ]
    )
    assert apex.report()["topology"] == "two_backends"


def test_load_workers_come_from_the_command_line_else_the_ini_and_must_be_positive(
    tmp_path: Path,
) -> None:
    assert _resolve(tmp_path).load_workers == 1  # one generator process unless told
    assert _resolve(tmp_path, ini={"load_workers": "3"}).load_workers == 3
    assert (
        _resolve(tmp_path, cli={"load_workers": "2"}, ini={"load_workers": "3"}).load_workers == 2
    )
    with pytest.raises(pytest.UsageError, match=r"--apex-load-workers: not a whole number >= 1"):
        _resolve(tmp_path, cli={"load_workers": "0"})
    with pytest.raises(pytest.UsageError, match=r"apex_load_workers: not a whole number >= 1"):
        _resolve(tmp_path, ini={"load_workers": "many"})


def test_the_seed_comes_from_the_command_line_else_the_ini_and_must_be_a_number(
    tmp_path: Path,
) -> None:
    assert _resolve(tmp_path).seed is None  # a new seed per run, chosen by the suite
    assert _resolve(tmp_path, ini={"seed": "7"}).seed == 7
    assert _resolve(tmp_path, cli={"seed": "11"}, ini={"seed": "7"}).seed == 11
    with pytest.raises(pytest.UsageError, match=r"--apex-seed: not an integer: 'x'"):
        _resolve(tmp_path, cli={"seed": "x"})
