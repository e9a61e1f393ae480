"""The rollback decision matrix: which kinds of failure roll a candidate back by themselves.

The staging procedure's matrix (reference §2) is shipped as data, `decision_matrix.toml`
beside this module, so a team can read it, copy it and change it without touching code.
`DecisionMatrix.default()` is the shipped file; `DecisionMatrix.load(path)` is a user's file
merged over it:

* an ``[issues.NAME]`` table for a shipped kind changes only the fields it gives, and the
  others keep their shipped values;
* a table for a new kind must give every field (severity, auto_rollback, manual_review);
* kinds the file leaves out, and ``[inconclusive]`` when it is left out, keep the shipped
  values.

A matrix is validated when it is read, never when a decision depends on it: every error
(`MatrixError`) names the file, the entry and the field, and says what is accepted. An unknown
severity, a misspelt field or a new kind that is nearly a shipped one (``memroy_leak``) is
refused rather than read as something else. Flagger passes an analysis whose metric name is
wrong (reference §4); here a name the matrix does not know is an error wherever it appears.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, cast

Severity = Literal["critical", "high", "medium", "low"]
# Most severe first: the order in which a decision lists what drove it.
SEVERITIES: Final[tuple[Severity, ...]] = ("critical", "high", "medium", "low")

InconclusiveAction = Literal["pause", "rollback"]
INCONCLUSIVE_ACTIONS: Final[tuple[InconclusiveAction, ...]] = ("pause", "rollback")

DEFAULT_FILE: Final = "decision_matrix.toml"
ISSUE_FIELDS: Final[tuple[str, ...]] = ("severity", "auto_rollback", "manual_review", "description")
REQUIRED_FIELDS: Final[tuple[str, ...]] = ("severity", "auto_rollback", "manual_review")
SECTIONS: Final[tuple[str, ...]] = ("issues", "inconclusive")
# How alike a new kind's name and a shipped one must be to be taken for a misspelling:
# ``memroy_leak`` / ``memory_leak`` score 0.91, ``websocket_failure`` / ``..._failures`` 0.97.
MISSPELLING_CUTOFF: Final = 0.85


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean memory_leak?)`` or "", as the settings say it. Not imported from
    `pytest_apex.settings.thresholds`: the settings import this module (they hold the matrix
    a run uses), and an engine depends on nothing above it."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class MatrixError(ValueError):
    """A decision matrix file that cannot be used, with the file, entry and field named."""


@dataclass(frozen=True)
class Issue:
    """One row of the matrix: what a failed measurement of this kind of issue does.

    `manual_review` on an issue that also rolls back means a human looks after the rollback;
    an issue that does not roll back always waits for a human.
    """

    kind: str
    severity: Severity
    auto_rollback: bool
    manual_review: bool
    description: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"unknown severity {self.severity!r}; accepted: {', '.join(SEVERITIES)}"
            )
        if not (self.auto_rollback or self.manual_review):
            raise ValueError(f"issue {self.kind} neither rolls back nor goes to a review")

    @property
    def rank(self) -> int:
        """0 for critical ... 3 for low: sort by it to put the worst first."""
        return SEVERITIES.index(self.severity)


@dataclass(frozen=True)
class DecisionMatrix:
    """Every issue kind the analysis may report, and what an inconclusive analysis does."""

    issues: Mapping[str, Issue]
    inconclusive: InconclusiveAction = "pause"
    sources: tuple[Path, ...] = ()  # the files read, shipped file first
    overridden: frozenset[str] = field(default_factory=frozenset)  # kinds a user's file set

    def __post_init__(self) -> None:
        if self.inconclusive not in INCONCLUSIVE_ACTIONS:
            raise ValueError(
                f"unknown inconclusive action {self.inconclusive!r}; "
                f"accepted: {', '.join(INCONCLUSIVE_ACTIONS)}"
            )
        object.__setattr__(self, "issues", MappingProxyType(dict(self.issues)))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.issues)

    def issue(self, kind: str) -> Issue:
        """The row for `kind`; a kind the matrix does not know is an error, never a pass."""
        try:
            return self.issues[kind]
        except KeyError:
            hint = did_you_mean(kind, self.issues)
            raise KeyError(
                f"issue kind {kind!r} is not in the decision matrix{hint}; "
                f"known: {', '.join(self.issues)}"
            ) from None

    @classmethod
    def default(cls) -> DecisionMatrix:
        """The shipped matrix (the staging procedure's, reference §2)."""
        return _default()

    @classmethod
    def load(cls, path: Path) -> DecisionMatrix:
        """A user's matrix file merged over the shipped one (see the module doc)."""
        return cls.default().merged(_read(path), path)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: Path) -> DecisionMatrix:
        """A complete matrix from parsed TOML: every issue gives every required field."""
        return cls(issues={}).merged(data, source, complete=True)

    def merged(
        self, data: Mapping[str, Any], source: Path, *, complete: bool = False
    ) -> DecisionMatrix:
        """This matrix with `data` (one file's parsed TOML) over it.

        `complete`: the file is a whole matrix on its own (the shipped one), so `overridden`
        stays empty.
        """
        where = str(source)
        _refuse_unknown(data, SECTIONS, where, "")
        issues_data = data.get("issues", {})
        if not isinstance(issues_data, Mapping):
            raise MatrixError(f"{where}: [issues] must be a table of [issues.NAME] tables")
        issues = dict(self.issues)
        for kind, entry in issues_data.items():
            issues[kind] = _issue(kind, entry, self.issues.get(kind), self.issues, where)
        inconclusive = _inconclusive(data.get("inconclusive"), self.inconclusive, where)
        return DecisionMatrix(
            issues=issues,
            inconclusive=inconclusive,
            sources=(*self.sources, source),
            overridden=self.overridden if complete else self.overridden | set(issues_data),
        )


def _refuse_unknown(table: Mapping[str, Any], allowed: Iterable[str], where: str, key: str) -> None:
    allowed = tuple(allowed)
    for name in table:
        if name not in allowed:
            prefix = f"[{key}] " if key else ""
            raise MatrixError(
                f"{where}: {prefix}unknown key {name!r}{did_you_mean(name, allowed)}; "
                f"accepted: {', '.join(allowed)}"
            )


def _issue(
    kind: str, entry: Any, base: Issue | None, known: Mapping[str, Issue], where: str
) -> Issue:
    key = f"issues.{kind}"
    if not isinstance(entry, Mapping):
        raise MatrixError(f"{where}: [{key}] must be a table (severity, auto_rollback, ...)")
    _refuse_unknown(entry, ISSUE_FIELDS, where, key)
    if base is None:
        close = difflib.get_close_matches(kind, list(known), n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            raise MatrixError(
                f"{where}: [{key}]: unknown issue kind {kind!r} (did you mean {close[0]}?); "
                "rename it if it is a new kind"
            )
        missing = [f for f in REQUIRED_FIELDS if f not in entry]
        if missing:
            raise MatrixError(
                f"{where}: [{key}]: a new issue kind must give {', '.join(REQUIRED_FIELDS)}; "
                f"missing: {', '.join(missing)}"
            )
    severity = entry.get("severity", base.severity if base else None)
    if severity not in SEVERITIES:
        raise MatrixError(
            f"{where}: [{key}] severity: unknown severity {severity!r}"
            f"{did_you_mean(str(severity), SEVERITIES)}; accepted: {', '.join(SEVERITIES)}"
        )
    flags = {}
    for name in ("auto_rollback", "manual_review"):
        value = entry.get(name, getattr(base, name) if base else None)
        if not isinstance(value, bool):
            raise MatrixError(
                f"{where}: [{key}] {name}: {value!r} is not a boolean; accepted: true, false"
            )
        flags[name] = value
    description = entry.get("description", base.description if base else "")
    if not isinstance(description, str):
        raise MatrixError(f"{where}: [{key}] description: {description!r} is not a string")
    if not (flags["auto_rollback"] or flags["manual_review"]):
        raise MatrixError(
            f"{where}: [{key}]: auto_rollback and manual_review are both false, so a failure "
            "of this kind would go nowhere; set one of them to true"
        )
    return Issue(kind, cast(Severity, severity), description=description, **flags)


def _inconclusive(table: Any, current: InconclusiveAction, where: str) -> InconclusiveAction:
    if table is None:
        return current
    if not isinstance(table, Mapping):
        raise MatrixError(f"{where}: [inconclusive] must be a table with an action")
    _refuse_unknown(table, ("action",), where, "inconclusive")
    action = table.get("action", current)
    if action == "promote":
        raise MatrixError(
            f"{where}: [inconclusive] action: 'promote' is refused: an analysis that could not "
            f"measure never promotes; accepted: {', '.join(INCONCLUSIVE_ACTIONS)}"
        )
    if action not in INCONCLUSIVE_ACTIONS:
        raise MatrixError(
            f"{where}: [inconclusive] action: unknown action {action!r}"
            f"{did_you_mean(str(action), INCONCLUSIVE_ACTIONS)}; "
            f"accepted: {', '.join(INCONCLUSIVE_ACTIONS)}"
        )
    return cast(InconclusiveAction, action)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such decision matrix file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"{path}: cannot read the decision matrix: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML: {exc}") from None


@cache
def _default() -> DecisionMatrix:
    shipped = resources.files("pytest_apex.rollback").joinpath(DEFAULT_FILE)
    data = tomllib.loads(shipped.read_text(encoding="utf-8"))
    return DecisionMatrix.from_data(data, Path(str(shipped)))
