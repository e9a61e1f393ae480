"""Replicas reached: how many instances answer behind one endpoint.

A topology that promises two replicas behind a balancer is only proven when both answer
through the endpoint the users reach: a balancer that pins every connection to one
replica, or a second replica that never joined, serves the health checks perfectly well.
Each probe is sent on a fresh connection (a TCP balancer picks a backend per connection;
a kept-alive connection would ask the same replica again), and the liveness answer names
the instance that answered at the field the description gives.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx

from pytest_apex.jsonpath import dig

# Probes per expected instance: with a random (not round-robin) balancer, 4 per replica
# miss one of two replicas with probability 2 * 2**-8, under 1 %.
PROBES_PER_REPLICA: Final = 4
_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class InstancesSeen:
    """What `count_instances` saw: which instance answered each probe, and what failed."""

    url: str
    instance_field: str
    sent: int
    instances: Mapping[str, int] = field(default_factory=dict)  # instance -> answers
    unnamed: int = 0  # answers without a value at `instance_field`
    failures: tuple[str, ...] = ()  # probes without a 2xx answer, in words

    @property
    def answered(self) -> int:
        """Probes that got a 2xx answer (named or not)."""
        return sum(self.instances.values()) + self.unnamed

    @property
    def distinct(self) -> int:
        return len(self.instances)

    def describe(self) -> str:
        seen = ", ".join(f"{name} x{count}" for name, count in sorted(self.instances.items()))
        parts = [f"{self.answered}/{self.sent} probes of {self.url} answered"]
        parts.append(f"instances at {self.instance_field!r}: {seen or 'none'}")
        if self.unnamed:
            parts.append(f"{self.unnamed} answer(s) named no instance")
        if self.failures:
            parts.append(f"unanswered: {self.failures[0]}" + (" ..." * (len(self.failures) > 1)))
        return "; ".join(parts)


@dataclass(frozen=True)
class ReplicaJudgement:
    """One service's replicas_reached criterion, as plain values."""

    observed: float  # distinct instances seen; NaN when nothing could be counted
    expected: int
    inconclusive: str  # why it could not be judged ("" when it could)
    detail: str
    samples: int


def count_instances(
    url: str,
    instance_field: str,
    probes: int,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout_s: float = _TIMEOUT_S,
) -> InstancesSeen:
    """Send `probes` GETs of `url`, each on a new connection, and count who answered.

    No connection is kept between probes (no keep-alive pool, ``Connection: close``), so
    each one goes through the balancer's choice again. Errors are recorded, not raised.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    seen: Counter[str] = Counter()
    unnamed = 0
    failures: list[str] = []
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"Connection": "close"}
    with httpx.Client(
        timeout=httpx.Timeout(timeout_s), limits=limits, transport=transport, headers=headers
    ) as client:
        for _ in range(probes):
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if not 200 <= response.status_code < 300:
                failures.append(f"answered {response.status_code}")
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            instance = dig(body, instance_field)
            if instance is None or instance == "":
                unnamed += 1
            else:
                seen[str(instance)] += 1
    return InstancesSeen(url, instance_field, probes, dict(seen), unnamed, tuple(failures))


def judge(seen: InstancesSeen, expected: int) -> ReplicaJudgement:
    """Pass when at least `expected` distinct instances answered. Fewer is a failure only
    when every probe was answered and named its instance: a probe that got no answer, or
    an answer that named none, could have come from the instance not seen."""
    detail = seen.describe()
    if seen.distinct >= expected:
        return ReplicaJudgement(seen.distinct, expected, "", detail, seen.answered)
    why = ""
    if seen.answered == 0:
        why = f"no probe of {seen.url} was answered"
    elif seen.failures:
        why = f"{len(seen.failures)} of {seen.sent} probes went unanswered"
    elif seen.unnamed:
        why = f"{seen.unnamed} of {seen.sent} answers named no instance at {seen.instance_field!r}"
    observed = math.nan if seen.distinct == 0 else seen.distinct  # nothing counted: no value
    return ReplicaJudgement(observed, expected, why, detail, seen.answered)


def not_probed(service: str, expected: int, why: str) -> ReplicaJudgement:
    """The criterion of a replicated service that could not be probed at all, and why."""
    return ReplicaJudgement(math.nan, expected, why, "", 0)


def no_instance_field(service: str, expected: int) -> ReplicaJudgement:
    """The criterion of a replicated service whose liveness answer names no instance."""
    return not_probed(
        service,
        expected,
        f"{service}'s liveness route names no instance_field, so which of its {expected} "
        "instances answered cannot be told",
    )
