"""Reading an app description: find it, validate it against its schema, build the model.

A description lives in ``apex.toml`` (its ``[app]`` table) or in ``pyproject.toml``
(``[tool.pytest-apex.app]``). It is validated once, at start-up, against the JSON Schema
shipped beside this module, then for what a schema cannot say (a route that names a service
the description does not have). Every problem is reported at once, each naming its key, so
a team fixes its description in one pass.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from pytest_apex.app.model import (
    AppDescription,
    Auth,
    Candidate,
    Capabilities,
    ConfigRoute,
    Database,
    FaultSwitches,
    HealthRoute,
    Limits,
    Login,
    MetricsRoute,
    Monitoring,
    Pagination,
    PromisedSetting,
    Release,
    Resource,
    Rollout,
    RowTable,
    Service,
    SigningKey,
    Signup,
    Topology,
    Users,
)

DESCRIPTION_FILE: Final = "apex.toml"
PYPROJECT_TABLE: Final = ("tool", "pytest-apex", "app")


class DescriptionError(ValueError):
    """The app description is missing, unreadable or invalid; the message names each key."""


@cache
def _validator() -> Draft202012Validator:
    text = resources.files("pytest_apex.app").joinpath("description.schema.json").read_text()
    return Draft202012Validator(json.loads(text))


def find_description(rootdir: Path, explicit: Path | None = None) -> tuple[Mapping[str, Any], str]:
    """The raw description and where it was found ("" when the project has none).

    `explicit` (a TOML file given on the command line or in the ini) must exist and hold
    one; otherwise ``apex.toml`` beside the ini file wins over ``pyproject.toml``.
    """
    if explicit is not None:
        data = _table_of(explicit)
        if data is None:
            raise DescriptionError(
                f"{explicit} holds no app description: expected an [app] table (apex.toml) "
                "or [tool.pytest-apex.app] (pyproject.toml)"
            )
        return data, str(explicit)
    for candidate in (rootdir / DESCRIPTION_FILE, rootdir / "pyproject.toml"):
        if candidate.is_file():
            data = _table_of(candidate)
            if data is not None:
                return data, str(candidate)
    return {}, ""


def _table_of(path: Path) -> Mapping[str, Any] | None:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DescriptionError(f"app description {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise DescriptionError(f"app description {path} is not valid TOML: {exc}") from None
    keys: Iterable[str] = ("app",) if path.name != "pyproject.toml" else PYPROJECT_TABLE
    table: Any = document
    for key in keys:
        if not isinstance(table, Mapping) or key not in table:
            return None
        table = table[key]
    return table if isinstance(table, Mapping) else None


def load_description(data: Mapping[str, Any], source: str) -> AppDescription:
    """Validate a raw description and build it; `DescriptionError` lists every problem."""
    problems = [_describe(error) for error in _sorted(_validator().iter_errors(data))]
    if not problems:
        problems = _cross_reference_problems(data)
    if problems:
        where = f" ({source})" if source else ""
        raise DescriptionError(
            f"the app description{where} is invalid:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return _build(data, source)


def _sorted(errors: Iterable[ValidationError]) -> list[ValidationError]:
    return sorted(errors, key=lambda e: [str(p) for p in e.absolute_path])


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        # jsonschema types schema as Mapping | bool | Unset: a mapping for this validator.
        allowed = sorted(cast(Mapping[str, Any], error.schema).get("properties", {}))
        given = error.instance if isinstance(error.instance, dict) else {}
        unknown = sorted(set(given) - set(allowed))
        hints = "; ".join(f"unknown key {u!r}{_did_you_mean(u, allowed)}" for u in unknown)
        return f"{key}: {hints or error.message}; accepted: {', '.join(allowed)}"
    if error.validator == "enum":
        choices = [str(c) for c in cast(Iterable[Any], error.validator_value)]
        hint = _did_you_mean(str(error.instance), choices)
        return f"{key}: {error.instance!r} is not accepted{hint}; accepted: {', '.join(choices)}"
    if error.validator == "required":
        return f"{key}: {error.message}"
    return f"{key}: {error.message}"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _cross_reference_problems(data: Mapping[str, Any]) -> list[str]:
    """What the schema cannot check: names that must refer to a described service, and
    fields that only make sense together."""
    services = data.get("services", {})
    names = sorted(services)
    problems = []

    def must_name_service(key: str, name: str) -> None:
        if name not in services:
            problems.append(
                f"{key}: {name!r} is not a described service{_did_you_mean(name, names)}; "
                f"services: {', '.join(names)}"
            )

    for name, service in services.items():
        for kind in ("liveness", "readiness"):
            route = service.get(kind)
            if not route:
                continue
            key = f"services.{name}.{kind}"
            fmt = route.get("format", "any-2xx")
            if fmt == "json-field" and not route.get("field"):
                problems.append(f"{key}.field: a json-field health route must name its field")
            if route.get("dependencies") and fmt != "health+json":
                problems.append(
                    f"{key}.dependencies: only a health+json answer names its dependencies "
                    f"(format is {fmt!r})"
                )
            if kind == "readiness" and route.get("instance_field"):
                problems.append(
                    f"{key}.instance_field: only the liveness route names the answering "
                    "instance (move it to liveness)"
                )
            for dependency in route.get("dependencies", ()):
                if dependency not in services:
                    # Components may be named differently from services (postgres vs db):
                    # allowed, but only when no service could have been meant.
                    close = difflib.get_close_matches(dependency, names, n=1, cutoff=0.8)
                    if close:
                        problems.append(
                            f"{key}.dependencies: {dependency!r} is not a service "
                            f"(did you mean {close[0]!r}?)"
                        )
    auth = data.get("auth") or {}
    for part in ("login", "signup"):
        if part in auth:
            must_name_service(f"auth.{part}.service", auth[part]["service"])
    if "signing_key" in auth:
        must_name_service("auth.signing_key.service", auth["signing_key"]["service"])
    for name, resource in (data.get("resources") or {}).items():
        must_name_service(f"resources.{name}.service", resource["service"])
    if "database" in data:
        must_name_service("database.service", data["database"]["service"])
    faults = data.get("faults") or {}
    for name in faults.get("files", {}):
        if name not in faults.get("known", ()):
            problems.append(f"faults.files.{name}: not one of the known faults (faults.known)")
    promised = {
        setting
        for service in services.values()
        for setting in ((service.get("config") or {}).get("settings") or {})
    }
    for kind, setting in (data.get("limits") or {}).items():
        if setting not in promised:
            problems.append(
                f"limits.{kind}: {setting!r} is no setting of any service's config route "
                f"(known: {', '.join(sorted(promised)) or 'none'})"
            )
    for name, topology in (data.get("topologies") or {}).items():
        key = f"topologies.{name}"
        for described in topology.get("endpoints", {}):
            must_name_service(f"{key}.endpoints", described)
        for described in topology.get("replicas", {}):
            must_name_service(f"{key}.replicas", described)
    problems += _rollout_problems(data.get("rollout"), names, faults.get("known", ()))
    if (data.get("capabilities") or {}).get("agent_runs") and not any(
        s.get("websocket") for s in services.values()
    ):
        problems.append(
            "capabilities.agent_runs: agent runs stream over a WebSocket, but no service "
            "names a websocket route"
        )
    return problems


def _rollout_problems(
    rollout: Mapping[str, Any] | None, services: list[str], known_faults: Iterable[str]
) -> list[str]:
    """Names in the rollout table that must refer to something described."""
    if not rollout:
        return []
    problems = []
    releases = sorted(rollout["releases"])
    if rollout["service"] not in services:
        problems.append(
            f"rollout.service: {rollout['service']!r} is not a described service"
            f"{_did_you_mean(rollout['service'], services)}"
        )
    if rollout["baseline"] not in releases:
        problems.append(
            f"rollout.baseline: {rollout['baseline']!r} is not one of rollout.releases "
            f"({', '.join(releases)}){_did_you_mean(rollout['baseline'], releases)}"
        )
    for name, release in rollout["releases"].items():
        if bool(release.get("command")) == bool(release.get("recreate")):
            problems.append(
                f"rollout.releases.{name}: give either `recreate` (compose services) or "
                "`command` (how it is deployed), exactly one"
            )
    known = set(known_faults)
    for name, candidate in rollout["candidates"].items():
        if candidate["release"] not in releases:
            problems.append(
                f"rollout.candidates.{name}.release: {candidate['release']!r} is not one of "
                f"rollout.releases{_did_you_mean(candidate['release'], releases)}"
            )
        elif candidate["release"] == rollout["baseline"]:
            problems.append(
                f"rollout.candidates.{name}.release: the baseline cannot be its own candidate"
            )
        for fault in candidate.get("faults", ()):
            if fault not in known:
                problems.append(
                    f"rollout.candidates.{name}.faults: {fault!r} is not a known fault "
                    f"(faults.known){_did_you_mean(fault, known)}"
                )
    return problems


def _rollout(raw: Mapping[str, Any] | None) -> Rollout | None:
    if raw is None:
        return None
    return Rollout(
        service=raw["service"],
        baseline=raw["baseline"],
        releases=MappingProxyType(
            {
                name: Release(
                    name=name,
                    env=MappingProxyType(dict(release.get("env", {}))),
                    recreate=tuple(release.get("recreate", ())),
                    command=tuple(release.get("command", ())),
                    schema=release.get("schema", "none"),
                )
                for name, release in raw["releases"].items()
            }
        ),
        tables=tuple(
            RowTable(name, table["key"], table["owner"], tuple(table["columns"]))
            for name, table in raw["tables"].items()
        ),
        candidates=tuple(
            Candidate(
                name=name,
                release=candidate["release"],
                faults=tuple(candidate.get("faults", ())),
                expect=candidate.get("expect", "promote"),
            )
            for name, candidate in raw["candidates"].items()
        ),
        release_field=raw.get("release_field", ""),
        port_env=raw.get("port_env", ""),
    )


def _health(raw: Mapping[str, Any] | None) -> HealthRoute | None:
    if raw is None:
        return None
    return HealthRoute(
        path=raw["path"],
        format=raw.get("format", "any-2xx"),
        field=raw.get("field", ""),
        expect=raw.get("expect", True),
        dependencies=tuple(raw.get("dependencies", ())),
        instance_field=raw.get("instance_field", ""),
    )


def _topology(name: str, raw: Mapping[str, Any]) -> Topology:
    return Topology(
        name=name,
        files=tuple(raw.get("files", ())),
        endpoints=MappingProxyType(dict(raw.get("endpoints", {}))),
        replicas=MappingProxyType(dict(raw.get("replicas", {}))),
    )


def _service(name: str, raw: Mapping[str, Any]) -> Service:
    metrics = raw.get("metrics")
    return Service(
        name=name,
        role=raw["role"],
        port=raw.get("port"),
        scheme=raw.get("scheme", "http"),
        liveness=_health(raw.get("liveness")),
        readiness=_health(raw.get("readiness")),
        protected_routes=tuple(raw.get("protected_routes", ())),
        websocket=raw.get("websocket", ""),
        config=_config(raw.get("config")),
        metrics=None
        if metrics is None
        else MetricsRoute(
            metrics.get("path", "/metrics"),
            tuple(metrics.get("series", ())),
            tuple(metrics.get("at_rest", ())),
            metrics.get("memory", "process_resident_memory_bytes"),
        ),
        security_headers=raw.get("security_headers", True),
        settings=MappingProxyType(dict(raw.get("settings", {}))),
    )


def _config(raw: Mapping[str, Any] | None) -> ConfigRoute | None:
    if raw is None:
        return None
    settings = tuple(
        PromisedSetting(name, s["at"], s["expect"], s.get("unit", ""))
        for name, s in raw.get("settings", {}).items()
    )
    return ConfigRoute(raw["path"], settings)


def _body(raw: Mapping[str, Any]) -> Mapping[str, str]:
    return MappingProxyType(dict(raw.get("body", {})))


def _auth(raw: Mapping[str, Any] | None) -> Auth | None:
    if raw is None:
        return None
    login, signup, key = raw["login"], raw.get("signup"), raw.get("signing_key")
    return Auth(
        login=Login(
            service=login["service"],
            path=login["path"],
            body=_body(login),
            token_field=login.get("token_field", "access_token"),
            user_id_field=login.get("user_id_field", ""),
        ),
        signup=None if signup is None else Signup(signup["service"], signup["path"], _body(signup)),
        algorithm=raw.get("algorithm", "HS256"),
        signing_key=None if key is None else SigningKey(key["service"], key["env"]),
    )


def _pagination(raw: Mapping[str, Any] | None) -> Pagination:
    return Pagination(**dict(raw or {}))


def _resource(name: str, raw: Mapping[str, Any], service: str) -> Resource:
    return Resource(
        name=name,
        service=raw.get("service", service),
        collection=raw["collection"],
        item=raw.get("item", ""),
        id_field=raw.get("id_field", "id"),
        owner_field=raw.get("owner_field", ""),
        create=MappingProxyType(dict(raw.get("create", {}))),
        update=MappingProxyType(dict(raw.get("update", {}))),
        update_method=raw.get("update_method", "PATCH"),
        pagination=_pagination(raw.get("pagination")),
        sub_resources=tuple(
            _resource(sub, sub_raw, raw.get("service", service))
            for sub, sub_raw in (raw.get("sub_resources") or {}).items()
        ),
    )


def _monitoring(raw: Mapping[str, Any] | None) -> Monitoring | None:
    if raw is None:
        return None
    alerts = raw.get("alerts", "")
    return Monitoring(
        endpoint=raw["endpoint"],
        request_duration=raw["request_duration"],
        selector=raw.get("selector", ""),
        # `alerts = false`: this server's alerts are not the app's to answer for.
        alerts=None if alerts is False else ("" if alerts is True else alerts),
    )


def _build(data: Mapping[str, Any], source: str) -> AppDescription:
    users = data.get("users", {})
    database = data.get("database")
    faults = data.get("faults")
    return AppDescription(
        name=data["name"],
        services=MappingProxyType(
            {name: _service(name, raw) for name, raw in data["services"].items()}
        ),
        auth=_auth(data.get("auth")),
        users=Users(**users),
        resources=tuple(
            _resource(name, raw, raw["service"])
            for name, raw in (data.get("resources") or {}).items()
        ),
        database=None
        if database is None
        else Database(
            service=database["service"],
            schema_objects=frozenset(database.get("schema_objects", ())),
            violations_query=database.get("violations_query", ""),
            user_env=database.get("user_env", "POSTGRES_USER"),
            password_env=database.get("password_env", "POSTGRES_PASSWORD"),
            database_env=database.get("database_env", "POSTGRES_DB"),
        ),
        capabilities=Capabilities(**data.get("capabilities", {})),
        limits=Limits(**data.get("limits", {})),
        adapter=data.get("adapter", "rest"),
        cors_origin=data.get("cors_origin", ""),
        topologies=MappingProxyType(
            {name: _topology(name, raw) for name, raw in (data.get("topologies") or {}).items()}
        ),
        rollout=_rollout(data.get("rollout")),
        monitoring=_monitoring(data.get("monitoring")),
        faults=None
        if faults is None
        else FaultSwitches(
            faults["env"],
            tuple(faults.get("known", ())),
            MappingProxyType(dict(faults.get("files", {}))),
        ),
        source=source,
    )
