"""The reference stack's schema migrations (fixtures/stack/services/apex_migrations).

pytest-alembic's built-in tests (one head, empty -> head, every step up and down, the
tables of apex_migrations.schema equal to what the chain builds) run against a scratch
database on the run's PostgreSQL, created for each test and dropped after it; so do the
checks of each revision's schema and of the migrate job's choices (expand, rollback,
contract). The last tests look at the stack's own database, which its `migrate` job built.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from psycopg import sql
from pytest_alembic.tests import (  # noqa: F401  (collected here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import CheckConstraint, create_engine, inspect, pool
from sqlalchemy.engine import URL, Engine, make_url

from pytest_apex.reference import reference_description
from pytest_apex.targets.base import ContainerInfo
from tests.conftest import COMPOSE_FILE, STACK_DIR

sys.path.insert(0, str(STACK_DIR / "services"))  # the services' packages, as in their image
from apex_migrations import (
    BASELINE,
    CONTRACT_THREAD_SUMMARY,
    EXPAND_THREAD_SUMMARY,
    REVISION_ENV,
    REVISIONS,
)
from apex_migrations import (
    alembic_config as apex_alembic_config,
)
from apex_migrations.__main__ import migrate
from apex_migrations.schema import metadata_at


def _sqlalchemy_url(dsn: str, database: str | None = None) -> URL:
    url = make_url(dsn).set(drivername="postgresql+psycopg")
    return url.set(database=database) if database else url


@pytest.fixture
def scratch_url(apex_postgres_dsn: str) -> Iterator[URL]:
    """A fresh, empty database on the run's PostgreSQL, dropped after the test."""
    name = f"apex_migrations_{uuid.uuid4().hex[:10]}"
    admin = _sqlalchemy_url(apex_postgres_dsn).render_as_string(hide_password=False)
    conninfo = admin.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _sqlalchemy_url(apex_postgres_dsn, name)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def alembic_engine(scratch_url: URL) -> Iterator[Engine]:
    engine = create_engine(scratch_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def alembic_config():
    return apex_alembic_config()


def _differences(engine: Engine, revision: str) -> list:
    """What autogenerate would change to make the database `metadata_at(revision)`, and
    the CHECK constraints (which autogenerate does not compare) present on one side only."""
    meta = metadata_at(revision)
    with engine.connect() as conn:
        diffs = list(compare_metadata(MigrationContext.configure(conn), meta))
        inspector = inspect(conn)
        for name, table in meta.tables.items():
            found = {c["name"] for c in inspector.get_check_constraints(name)}
            declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
            diffs += [("check only in the database", name, c) for c in sorted(found - declared)]
            diffs += [("check only in the schema", name, c) for c in sorted(declared - found)]
    return diffs


def test_every_revision_builds_exactly_its_schema(alembic_runner, alembic_engine) -> None:
    assert alembic_runner.history.revisions[1:-1] == list(REVISIONS)  # "base" ... "heads"
    for revision in REVISIONS:
        alembic_runner.migrate_up_to(revision)
        assert _differences(alembic_engine, revision) == [], revision


def test_baseline_creates_the_isolation_violations_view(alembic_runner, alembic_engine) -> None:
    alembic_runner.migrate_up_to(BASELINE)
    with alembic_engine.connect() as conn:
        assert inspect(conn).get_view_names() == ["isolation_violations"]


def _insert_thread_as_v1(url: URL) -> None:
    """What v1's backend does to create a thread (apex_backend.thread_store)."""
    conninfo = url.render_as_string(hide_password=False).replace("+psycopg", "", 1)
    with psycopg.connect(conninfo) as conn:
        user = conn.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", (f"{uuid.uuid4().hex}@x",)
        ).fetchone()[0]
        conn.execute("INSERT INTO threads (user_id, title) VALUES (%s, 't')", (user,))


def _revision(url: URL) -> tuple[str, ...]:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    engine.dispose()
    return heads


def test_the_migrate_job_expands_keeps_v1_working_and_contracts_only_by_name(
    scratch_url: URL,
) -> None:
    for refused in ("head", "heads"):
        with pytest.raises(CommandError, match="refusing"):
            migrate(refused, scratch_url)
    assert _revision(scratch_url) == ()

    assert "upgraded from empty" in migrate(BASELINE, scratch_url)
    _insert_thread_as_v1(scratch_url)
    migrate(EXPAND_THREAD_SUMMARY, scratch_url)  # v2's release
    _insert_thread_as_v1(scratch_url)  # v1, still running or rolled back to, is unaffected
    # The rollback: v1's job on v2's schema succeeds and leaves it expanded.
    assert "nothing to do" in migrate(BASELINE, scratch_url)
    assert _revision(scratch_url) == (EXPAND_THREAD_SUMMARY,)

    migrate(CONTRACT_THREAD_SUMMARY, scratch_url)  # only by name
    assert _revision(scratch_url) == (CONTRACT_THREAD_SUMMARY,)
    with pytest.raises(psycopg.errors.NotNullViolation):  # why v1 must never meet it
        _insert_thread_as_v1(scratch_url)


# --- the stack's own database ----------------------------------------------------------------


def _stack_revision() -> str:
    """What docker-compose.staging.yml gives its migrate job (its APEX_DB_REVISION default
    unless the run's environment sets one)."""
    assert f"APEX_DB_REVISION: ${{APEX_DB_REVISION:-{BASELINE}}}" in COMPOSE_FILE.read_text()
    return os.environ.get(REVISION_ENV) or BASELINE


def test_the_stack_database_is_at_its_release_revision_with_every_schema_object(
    apex_postgres_dsn: str,
) -> None:
    url = _sqlalchemy_url(apex_postgres_dsn)
    assert _revision(url) == (_stack_revision(),)
    database = reference_description().database
    assert database is not None
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        inspector = inspect(conn)
        present = {*inspector.get_table_names(), *inspector.get_view_names()}
    engine.dispose()
    assert set(database.schema_objects) <= present
    assert present - {"alembic_version"} >= set(metadata_at(_stack_revision()).tables)


def test_the_migrate_job_ran_and_exited_zero(apex_containers: list[ContainerInfo]) -> None:
    (job,) = [c for c in apex_containers if c.service == "migrate"]
    assert (job.state, job.exit_code) == ("exited", 0)
