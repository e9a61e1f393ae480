"""Configuration in effect: what a running service really uses, against what was promised.

The staging report promised settings (`.env.staging`) that the original backend never read.
Reading the file again proves nothing, so the values here come from the running process (a
config route of the service, built from its live objects) and from data stores themselves;
the promises are data in the app description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_apex.app.model import PromisedSetting
from pytest_apex.jsonpath import dig

Setting = float | int | bool | str


@dataclass(frozen=True)
class SettingComparison:
    """One promised setting against the value in effect, as numbers a criterion can hold."""

    name: str
    expected: Setting
    observed: Setting | None
    unit: str = ""

    def as_numbers(self) -> tuple[float, float]:
        """(observed, threshold) for an ``==`` criterion.

        Numbers compare as themselves; flags and strings as 1 when they match and 0 when
        not (threshold 1), and a missing value as NaN: not reported is not judged a pass.
        """
        expected, observed = self.expected, self.observed
        if isinstance(expected, int | float) and not isinstance(expected, bool):
            # Ints stay ints, so the criterion reads "20 == 20", not "20.0 == 20.0".
            if isinstance(observed, int | float) and not isinstance(observed, bool):
                return _whole(observed), _whole(expected)
            return float("nan"), expected
        if observed is None:
            return float("nan"), 1
        return (1 if observed == expected else 0), 1

    def describe(self) -> str:
        shown = "not reported" if self.observed is None else repr(self.observed)
        return f"{self.name}: expected {self.expected!r}, in effect {shown}"


def _whole(value: float) -> float:
    # 30.0 seconds from one side and 30 from the other should read "30 == 30".
    return int(value) if float(value).is_integer() else value


def compare_in_effect(
    promised: tuple[PromisedSetting, ...], body: Mapping[str, Any]
) -> list[SettingComparison]:
    """Each promised setting against what the service's config answer reports at its path."""
    return [SettingComparison(s.name, s.expect, dig(body, s.at), s.unit) for s in promised]


def compare_settings(
    promised: Mapping[str, Setting], reported: Mapping[str, str]
) -> list[SettingComparison]:
    """A data store's promised settings against what it reports (as text: CONFIG GET)."""
    comparisons = []
    for name, expected in promised.items():
        seen = reported.get(name)
        observed: Setting | None = seen
        if (
            seen is not None
            and isinstance(expected, int | float)
            and not isinstance(expected, bool)
        ):
            try:
                observed = float(seen)
            except ValueError:
                observed = None
        comparisons.append(SettingComparison(name, expected, observed))
    return comparisons
