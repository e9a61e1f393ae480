"""The app description: what the suites need to know about an app, as plain values.

One description replaces every assumption the suites would otherwise make about the app
under test: which services exist and what they are for, where they answer health and in
which format, which routes need a token, how users log in, which resources they own, and
what the app can do at all. The reference stack's description (`pytest_apex/reference/`)
is one instance; a team writes its own in ``pyproject.toml`` or ``apex.toml``.

Nothing here does I/O: `pytest_apex.app.loading` reads and validates a description,
engines and suites only read these objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

Role = Literal["api", "auth", "frontend", "database", "cache", "job"]
ROLES: Final[tuple[Role, ...]] = ("api", "auth", "frontend", "database", "cache", "job")

# How a health route says "healthy": an `application/health+json` body with status
# pass/warn, any 2xx answer, or a JSON field with an expected value.
HealthFormat = Literal["health+json", "any-2xx", "json-field"]
HEALTH_FORMATS: Final[tuple[HealthFormat, ...]] = ("health+json", "any-2xx", "json-field")

PaginationStyle = Literal["none", "page", "offset", "cursor"]
PAGINATION_STYLES: Final[tuple[PaginationStyle, ...]] = ("none", "page", "offset", "cursor")

JsonValue = str | int | float | bool | None


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class HealthRoute:
    """One health route and how to read its answer.

    `dependencies` are the components a readiness answer must report (the `component` part
    of health+json check keys, e.g. ``postgres`` for ``postgres:responseTime``); only a
    health+json answer names its dependencies, so other formats must leave it empty.
    """

    path: str
    format: HealthFormat = "any-2xx"
    field: str = ""  # json-field: dotted path of the field, e.g. "status" or "checks.db"
    expect: JsonValue = True  # json-field: the value that means healthy
    dependencies: tuple[str, ...] = ()
    # Liveness only: dotted path of the field naming the instance (replica) that answered,
    # e.g. "instance" for {"status": "pass", "instance": "backend-2"} ("" when it says none).
    instance_field: str = ""


@dataclass(frozen=True)
class MetricsRoute:
    """A Prometheus text route and the series other suites read from it."""

    path: str = "/metrics"
    series: tuple[str, ...] = ()
    # Gauges of live resources (open sockets, execution contexts) that must fall back to
    # where they were once users are done: the isolation suite's cleanup check.
    at_rest: tuple[str, ...] = ()
    # The gauge of the process's resident bytes: the load suite's memory gates read it on a
    # target with no container access (prometheus_client exports this name by default).
    memory: str = "process_resident_memory_bytes"


@dataclass(frozen=True)
class PromisedSetting:
    """A setting the running service must report: where in its config answer, which value."""

    name: str
    at: str  # dotted path in the config route's JSON answer
    expect: str | int | float | bool
    unit: str = ""


@dataclass(frozen=True)
class ConfigRoute:
    """A route where the running service reports the configuration it uses, and the promises
    to check there (read from the live process, never from the files that configured it)."""

    path: str
    settings: tuple[PromisedSetting, ...] = ()


@dataclass(frozen=True)
class Service:
    """A service of the app: its role, where it listens, and the routes the suites probe.

    `port` is the container port a compose target publishes (None for an external target or
    a service nobody reaches, such as a one-shot job); `scheme` is the URL scheme of that
    address. Routes left unset are capabilities the service does not have: checks that need
    them are skipped with the reason, never failed and never passed vacuously.
    """

    name: str
    role: Role
    port: int | None = None
    scheme: str = "http"
    liveness: HealthRoute | None = None
    readiness: HealthRoute | None = None
    protected_routes: tuple[str, ...] = ()  # GET routes that need a bearer token
    websocket: str = ""  # path of the WebSocket route ("" when there is none)
    config: ConfigRoute | None = None  # where it reports the configuration in effect
    metrics: MetricsRoute | None = None
    security_headers: bool = True  # whether its HTTP answers must carry security headers
    # A data store's own settings, as it reports them (Redis: CONFIG GET), e.g. maxmemory.
    settings: Mapping[str, str | int | float | bool] = field(default_factory=_frozen)

    @property
    def health_paths(self) -> tuple[str, ...]:
        """Every health path, liveness first, without repeats."""
        routes = (self.liveness, self.readiness)
        return tuple(dict.fromkeys(r.path for r in routes if r is not None))


@dataclass(frozen=True)
class SigningKey:
    """Where the token signing key is found, for checks that must forge a valid token.

    `env` names the variable in `service`'s environment (compose targets reveal it); an
    external target may give it with ``--apex-threshold``-style settings later. Without a
    key, such checks are inconclusive rather than signed with a key the app does not use.
    """

    service: str
    env: str


@dataclass(frozen=True)
class Login:
    """How a user logs in over REST: the route, the body, where the token is in the answer.

    Body values are templates: ``{username}``, ``{password}`` and ``{email}`` are filled per
    user. `token_field` and `user_id_field` are dotted paths into the JSON answer; an empty
    `user_id_field` takes the user id from the token's ``sub`` claim.
    """

    service: str
    path: str
    body: Mapping[str, str] = field(default_factory=_frozen)
    token_field: str = "access_token"
    user_id_field: str = ""


@dataclass(frozen=True)
class Signup:
    """How a user account is created before the first login (omitted: login creates it)."""

    service: str
    path: str
    body: Mapping[str, str] = field(default_factory=_frozen)


@dataclass(frozen=True)
class Users:
    """How the suites make their users: names the app accepts, and how fast to sign up.

    ``{index}``, ``{run}`` and ``{domain}`` fill `username`; many apps reject reserved or
    unknown e-mail domains, and some take no e-mail at all, so both are the app's choice.
    `signup_concurrency` bounds sign-ups in flight (an app's own rate limit must not turn
    setup into the thing under test).
    """

    username: str = "user{index}-{run}@{domain}"
    domain: str = "example.test"
    signup_concurrency: int = 50


@dataclass(frozen=True)
class Auth:
    """The app's authentication as the suites exercise it."""

    login: Login
    signup: Signup | None = None
    algorithm: str = "HS256"  # the JWT algorithm the app signs its access tokens with
    signing_key: SigningKey | None = None


@dataclass(frozen=True)
class Pagination:
    """How a collection pages: by page number, by offset, or by a cursor/next link.

    `items_field` is where the items are in a page's JSON (empty: the answer is a list);
    `next_field` holds the next page's URL or cursor (empty when the app gives none).
    """

    style: PaginationStyle = "none"
    page_param: str = "page"
    size_param: str = "per_page"
    offset_param: str = "offset"
    cursor_param: str = "cursor"
    items_field: str = ""
    next_field: str = ""
    total_field: str = ""
    max_size: int = 0  # the largest page size the app serves (0: unknown)


@dataclass(frozen=True)
class Resource:
    """Something users own, reached over REST: where its collection and items live.

    Routes are templates: ``{id}`` is the item's id, ``{parent_id}`` the id of the resource
    a sub-resource belongs to. `create` is the JSON body that creates one; string values
    may hold ``{canary}``, which the isolation suite replaces with the owner's canary.
    `owner_field` names the field that carries the owner's user id ("" when items do not
    say who owns them).
    """

    name: str
    service: str
    collection: str
    item: str = ""
    id_field: str = "id"
    owner_field: str = ""
    create: Mapping[str, Any] = field(default_factory=_frozen)
    update: Mapping[str, Any] = field(default_factory=_frozen)
    update_method: Literal["PATCH", "PUT"] = "PATCH"
    pagination: Pagination = field(default_factory=Pagination)
    sub_resources: tuple[Resource, ...] = ()


@dataclass(frozen=True)
class Database:
    """The app's database as the suites read it (never write it)."""

    service: str
    schema_objects: frozenset[str] = frozenset()
    violations_query: str = ""  # a query whose rows are isolation violations ("" when none)
    user_env: str = "POSTGRES_USER"
    password_env: str = "POSTGRES_PASSWORD"
    database_env: str = "POSTGRES_DB"


@dataclass(frozen=True)
class Monitoring:
    """Where the app's own monitoring answers (a Prometheus-compatible query API) and what
    in it is the app's: the load suite reads the server's view of each stage there.

    `endpoint` names an endpoint of the target (a compose service publishing the API, or an
    ``--apex-url NAME=URL``), not necessarily a described service; `request_duration` is the
    base name of the API's request-duration histogram; `selector` the label matchers (PromQL,
    without braces) that keep its answers to users; `alerts` the matchers of the app's own
    alerts in ALERTS ("" for every alert the server has, None to read none).
    """

    endpoint: str
    request_duration: str
    selector: str = ""
    alerts: str | None = ""


@dataclass(frozen=True)
class Capabilities:
    """What the app can do at all; what it cannot is skipped with a reason, not failed."""

    agent_runs: bool = False  # runs an agent over a WebSocket and streams its events


@dataclass(frozen=True)
class Limits:
    """The app's own limits, each named by a setting of a service's config route (its value
    read from the running app, else the promised one). The isolation suite pushes past them,
    so that the overflow paths (queues, refusals, throttling) run under many users too."""

    runs_in_flight: str = ""  # agent runs the app runs at once before it queues or refuses
    sockets_per_user: str = ""  # sockets one user may hold open
    messages_per_minute: str = ""  # socket messages one connection may send per minute


@dataclass(frozen=True)
class FaultSwitches:
    """The app's own fault switches, if it has any: for proving that a suite has teeth."""

    env: str
    known: tuple[str, ...] = ()
    # Fault -> compose override file (relative to the compose file) for a fault that is a
    # container property rather than code, such as a service running as root.
    files: Mapping[str, str] = field(default_factory=_frozen)


@dataclass(frozen=True)
class Topology:
    """One way the app can be deployed: more instances of a service, behind something else.

    `files` are compose override files (relative to the compose file) that turn the base
    stack into this topology; `endpoints` maps a described service to the compose service
    whose published port now serves it (a balancer in front of replicas); `replicas` is
    how many instances the suites must reach behind a described service (1 when absent).
    """

    name: str
    files: tuple[str, ...] = ()
    endpoints: Mapping[str, str] = field(default_factory=_frozen)
    replicas: Mapping[str, int] = field(default_factory=_frozen)

    def replicas_of(self, service: str) -> int:
        return int(self.replicas.get(service, 1))

    @property
    def replicated(self) -> Mapping[str, int]:
        """Described services expected to run more than one instance -> how many."""
        return MappingProxyType({s: n for s, n in self.replicas.items() if n > 1})


SchemaChange = Literal["none", "expand", "contract"]
Expected = Literal["promote", "rollback", "review", "pause"]


@dataclass(frozen=True)
class Release:
    """One release of the rolled-out service, and how it is deployed.

    On a compose target, setting `env` (compose variables: the image tag, the schema
    revision its migration job goes to) and recreating `recreate` deploys it; elsewhere
    `command` does (``{release}`` in it is replaced by the name). `schema` says what the
    release's migration does: a ``contract`` step removes what an older release needs, so
    the drill refuses to deploy it while a rollback to the baseline is possible.
    """

    name: str
    env: Mapping[str, str] = field(default_factory=_frozen)
    recreate: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    schema: SchemaChange = "none"


@dataclass(frozen=True)
class RowTable:
    """Rows that must survive a rollback: their key, their owner and the columns the
    baseline reads (a column only the candidate writes is not part of their content)."""

    name: str
    key: str
    owner: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    """A candidate the drill deploys over the baseline, and the decision it must reach."""

    name: str
    release: str
    faults: tuple[str, ...] = ()
    expect: Expected = "promote"


@dataclass(frozen=True)
class Rollout:
    """How one release of `service` replaces another (the rollback suite's drill)."""

    service: str
    baseline: str
    releases: Mapping[str, Release]
    tables: tuple[RowTable, ...]
    candidates: tuple[Candidate, ...]
    release_field: str = ""  # liveness field naming the release that answered ("": unknown)
    # The compose variable that fixes the service's published port: a redeployed container
    # keeps the address users (and the run's other tests) already have.
    port_env: str = ""


@dataclass(frozen=True)
class AppDescription:
    """Everything the suites know about the app under test."""

    name: str
    services: Mapping[str, Service]
    auth: Auth | None = None
    users: Users = field(default_factory=Users)
    resources: tuple[Resource, ...] = ()
    database: Database | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    limits: Limits = field(default_factory=Limits)
    faults: FaultSwitches | None = None
    adapter: str = "rest"  # "rest", or "module:factory" building the app's own adapter
    cors_origin: str = ""  # the one origin the app's CORS policy lets in ("" when unknown)
    topologies: Mapping[str, Topology] = field(default_factory=_frozen)
    rollout: Rollout | None = None
    monitoring: Monitoring | None = None
    source: str = ""  # where it was read from, for messages

    def setting(self, name: str) -> tuple[Service, PromisedSetting] | None:
        """The service whose config route promises setting `name`, and the promise."""
        for service in self.services.values():
            for promised in service.config.settings if service.config else ():
                if promised.name == name:
                    return service, promised
        return None

    def with_role(self, role: Role) -> list[Service]:
        return [s for s in self.services.values() if s.role == role]

    @property
    def port_schemes(self) -> Mapping[int, str]:
        """Container port -> URL scheme, for a compose target's published addresses."""
        return MappingProxyType(
            {s.port: s.scheme for s in self.services.values() if s.port and s.scheme != "http"}
        )
