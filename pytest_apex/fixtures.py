"""Layered fixtures: settings -> target -> endpoints -> adapter -> users.

Each layer is small and overridable in a project's conftest.py (the pytest-django way):
override `apex_adapter` to drive your own app, `apex_target` to bring your own
environment, `apex_endpoints` to rewrite URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import pytest_asyncio

from pytest_apex._stash import target_session_key
from pytest_apex.adapters.base import AgentRun, AgentSession, AppAdapter, LoadSessions, UserSession
from pytest_apex.adapters.factory import adapter_for, username_for
from pytest_apex.adapters.load import LoadScenario
from pytest_apex.adapters.rest import AdapterError
from pytest_apex.app import AppDescription, Topology
from pytest_apex.dsn import postgres_dsn
from pytest_apex.load.engine import SessionFactory
from pytest_apex.reporting import allure as allure_report
from pytest_apex.settings import ApexSettings, settings_key
from pytest_apex.targets.base import ContainerInfo, Target
from pytest_apex.targets.errors import DockerUnavailable, StackStartError


@pytest.fixture(scope="session")
def apex_settings(pytestconfig: pytest.Config) -> ApexSettings:
    """The run's resolved settings: profile, thresholds in effect, target, faults.

    Suites read settings only through this fixture, so a project can hand a suite other
    thresholds (or a whole other settings object) from its conftest.py.
    """
    return pytestconfig.stash[settings_key]


@pytest.fixture(scope="session")
def apex_app(apex_settings: ApexSettings) -> AppDescription:
    """The description of the app under test (the project's own, or the reference stack's).

    Override it in conftest.py to build a description in Python instead of TOML.
    """
    return apex_settings.app


@pytest.fixture(scope="session")
def apex_target(pytestconfig: pytest.Config) -> Target:
    """The running stack of this run; started on first use, stopped at the end of the run.

    When it cannot start, the test errors with the diagnosis (each unhealthy service, its
    health-check output and last log lines), which is also attached to the Allure results.
    """
    session = pytestconfig.stash[target_session_key]
    try:
        with _live_terminal(pytestconfig):
            return session.acquire()
    except (StackStartError, DockerUnavailable) as exc:
        error = exc
    allure_report.attach_text("stack failure", str(error))
    if isinstance(error, StackStartError) and error.compose_output.strip():
        allure_report.attach_text("docker compose output", error.compose_output)
    # Outside the except block: the message already says everything, without a
    # "during handling of the above exception" chain.
    pytest.fail(f"stack failure: {error}", pytrace=False)


@contextlib.contextmanager
def _live_terminal(config: pytest.Config) -> Iterator[None]:
    """Let bring-up progress reach the terminal as it happens.

    A fixture's setup runs with output capture on, so the state changes and "still waiting"
    lines of a minute-long bring-up would only show after it, and only if the test failed.
    Capture is lifted the way pytest's live logging does it; under xdist a worker's stderr
    is the controller's terminal, so its progress shows too.
    """
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        if reporter is not None:
            reporter.ensure_newline()  # start below the "test_x.py " of the running test
        sys.stdout.flush()
        yield


@pytest.fixture(scope="session")
def apex_endpoints(apex_target: Target) -> dict[str, str]:
    """Base URL of each service of the target (through a topology's balancer where it
    routes one)."""
    try:
        return apex_target.endpoints()
    except StackStartError as exc:  # e.g. a reused stack without the topology's balancer
        error = exc
    pytest.fail(f"stack failure: {error}", pytrace=False)


@pytest.fixture(scope="session")
def apex_topology(apex_settings: ApexSettings, apex_app: AppDescription) -> Topology | None:
    """The selected topology of the app (``--apex-topology``), None for the base stack.

    Read from `apex_app`, so a description built in a conftest.py must carry the topology
    the run selected.
    """
    name = apex_settings.topology
    if not name:
        return None
    topology = apex_app.topologies.get(name)
    if topology is None:
        known = ", ".join(sorted(apex_app.topologies)) or "none"
        pytest.fail(
            f"the run selected topology {name!r}, which the app description of "
            f"{apex_app.name} does not describe (its topologies: {known})",
            pytrace=False,
        )
    return topology


@pytest.fixture
def apex_containers(apex_target: Target) -> list[ContainerInfo]:
    """The target's containers; tests that need them skip on external targets."""
    return _containers_or_skip(apex_target)


def _containers_or_skip(target: Target) -> list[ContainerInfo]:
    """`target.containers()`, skipping only where there are none to see by design.

    A compose target always has containers: when Docker cannot list them, or lists none,
    the test fails with the reason. Skipping there would silently drop the container
    checks (non-root user, limits, published ports) of exactly the stack they are for.
    """
    if not target.name.startswith("compose:"):
        containers = target.containers()
        if not containers:
            pytest.skip(f"target {target.name} gives no container access (external target)")
        return containers
    try:
        containers = target.containers()
    except Exception as exc:  # any failure to ask Docker, said in words
        error = f"{type(exc).__name__}: {exc}"
    else:
        if containers:
            return containers
        error = "Docker lists no container for it (was the stack removed during the run?)"
    # Outside the except block, as in apex_target: the message says it all.
    pytest.fail(f"cannot inspect the containers of {target.name}: {error}", pytrace=False)


@pytest_asyncio.fixture(loop_scope="session")
async def apex_adapter(
    apex_app: AppDescription, apex_endpoints: dict[str, str]
) -> AsyncIterator[AppAdapter]:
    """How the suites act as users: the adapter the app description names (the zero-code
    REST adapter unless it says otherwise). Override it to bring your own."""
    try:
        adapter = adapter_for(apex_app, apex_endpoints)
    except (AdapterError, ValueError) as exc:
        pytest.fail(f"no adapter for {apex_app.name}: {exc}", pytrace=False)
    yield adapter
    await adapter.aclose()


UserMaker = Callable[[int], Awaitable[UserSession]]
UserFactory = Callable[[int], Awaitable[list[UserSession]]]
AgentRunner = Callable[[AgentSession, str, str, float], Awaitable[AgentRun]]


@pytest_asyncio.fixture(loop_scope="session")
async def apex_new_user(
    apex_adapter: AppAdapter, apex_app: AppDescription
) -> AsyncIterator[UserMaker]:
    """`await apex_new_user(i)` signs up and logs in user `i` of this test, named by the
    description's template; every user made is closed afterwards."""
    run = uuid.uuid4().hex[:8]
    sessions: list[UserSession] = []

    async def make(index: int) -> UserSession:
        session = await apex_adapter.login(username_for(apex_app, index, run))
        sessions.append(session)
        return session

    yield make
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@pytest_asyncio.fixture(loop_scope="session")
async def apex_users(apex_new_user: UserMaker) -> UserFactory:
    """`await apex_users(n)` logs in n fresh users concurrently (any failure raises)."""
    made = 0

    async def make(count: int) -> list[UserSession]:
        nonlocal made
        first, made = made, made + count
        return list(await asyncio.gather(*(apex_new_user(first + i) for i in range(count))))

    return make


@pytest.fixture(scope="session")
def apex_postgres_dsn(
    apex_target: Target, apex_endpoints: dict[str, str], apex_app: AppDescription
) -> str:
    """A DSN for the app's database (the description's ``database.service``): its endpoint
    if it carries credentials (``--apex-url db=postgresql://user:pw@host/db``), else the
    endpoint plus the credentials the compose service was configured with (the variables
    the description names, POSTGRES_* by default)."""
    database = apex_app.database
    if database is None:
        pytest.skip("the app description has no [database] section")
    url = apex_endpoints.get(database.service)
    if not url:
        pytest.skip(
            f"no {database.service} endpoint (give --apex-url {database.service}=postgresql://...)"
        )
    if "@" in url:
        return url
    env = _environment_or_fail(apex_target, database.service)
    names = (database.user_env, database.password_env, database.database_env)
    if not set(names) <= env.keys():
        pytest.skip(
            f"{database.service} credentials unknown ({', '.join(names)} not in its "
            f"environment; give a DSN with --apex-url {database.service}=...)"
        )
    host = url.split("://", 1)[1]
    return postgres_dsn(host, *(env[name] for name in names))


def _environment_or_fail(target: Target, service: str) -> dict[str, str]:
    """`target.environment(service)`; on a compose target a failure to ask is a failure.

    Only an external target has no configuration to read by design (it answers {}).
    A compose target whose Docker cannot say fails the test with the reason, like
    `apex_containers`, instead of skipping it as if the target were external.
    """
    try:
        return target.environment(service)
    except Exception as exc:  # any failure to ask Docker, said in words
        error = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"cannot read the configuration of {target.name}: {error}", pytrace=False)


@pytest.fixture
def apex_run_agent() -> AgentRunner:
    """The agent-run action: `await apex_run_agent(user, thread_id, text, timeout)`.

    Suites run the agent only through this, so a team can redefine what one run is for its
    app (another channel, extra steps) without writing a whole adapter.
    """

    async def run(session: AgentSession, thread_id: str, text: str, timeout: float) -> AgentRun:
        return await session.run_agent(thread_id, text, timeout)

    return run


@pytest.fixture
def apex_load_sessions(apex_adapter: AppAdapter, apex_settings: ApexSettings) -> SessionFactory:
    """What the load suite's virtual users do: the adapter's `LoadSessions` (log in once,
    list, post, run the agent where there is one), thinking `load_think_s` between sessions.

    Override it to load the app with another scenario (any
    `pytest_apex.load.engine.SessionFactory`).
    """
    if not isinstance(apex_adapter, LoadSessions):
        pytest.skip(
            f"the adapter {type(apex_adapter).__name__} gives no load sessions "
            "(LoadSessions.load_sessions in pytest_apex/adapters/base.py)"
        )
    scenario = LoadScenario(
        think_s=apex_settings.thresholds.seconds("load_think_s"), run=uuid.uuid4().hex[:8]
    )
    try:
        return apex_adapter.load_sessions(scenario)
    except AdapterError as exc:
        error = str(exc)
    pytest.fail(f"no load sessions for {type(apex_adapter).__name__}: {error}", pytrace=False)
