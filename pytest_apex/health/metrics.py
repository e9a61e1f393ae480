"""Which series a Prometheus `/metrics` page exposes.

The other suites read these series (pool use, live execution contexts, run counters,
resident memory); a renamed metric would otherwise make their gates read "no data".
The page is read with `prometheus_client`'s own parser, not a pattern: label values may
hold any character (a `}` in a route label), and a histogram or summary is one family
whose samples are named `_bucket`, `_sum`, `_count`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families


class MetricsUnreadable(ValueError):
    """The page is not Prometheus text: a scraper would get nothing from it."""


def exposed_series(text: str) -> set[str]:
    """Names that have at least one sample: each sample's name (`x_bucket`, `x_total`) and
    the name of its family (`x` for a histogram or a counter), so either spelling of a
    requirement is found. A `# TYPE` line alone is not a series."""
    names: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            if family.samples:
                names.add(family.name)
                names.update(sample.name for sample in family.samples)
    except ValueError as exc:
        raise MetricsUnreadable(f"not Prometheus text: {exc}") from exc
    return names


def missing_series(text: str, required: Iterable[str]) -> list[str]:
    """The required names with no sample on the page, in the order they were asked for."""
    exposed = exposed_series(text)
    return [name for name in required if name not in exposed]


def sample_sums(text: str, names: Iterable[str]) -> dict[str, float]:
    """Each named series' samples added up (all label sets), for the names that have any."""
    wanted = set(names)
    sums: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    sums[sample.name] = sums.get(sample.name, 0.0) + float(sample.value)
    except ValueError as exc:
        raise MetricsUnreadable(f"not Prometheus text: {exc}") from exc
    return sums
