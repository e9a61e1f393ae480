"""Criteria relayed from pytest-xdist workers to the controller, each counted exactly once.

A worker sends the criteria recorded since its last report with each test report (so a
worker that crashes has already handed over all it measured), and all of its criteria again
when its session ends (so criteria recorded outside any test, in a session fixture's
teardown or a ``pytest_sessionfinish``, arrive too). Each entry carries a key unique to the
worker process and the criterion's position in it; the controller keeps the first copy of
each key, so the two channels never double count, and a restarted worker (same id, new
process) never collides with its predecessor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from uuid import uuid4

from pytest_apex.criteria import Criterion, Verdict

# Where a worker's session hands its criteria over (``workeroutput[WORKEROUTPUT_KEY]``).
WORKEROUTPUT_KEY: Final = "apex_criteria"

Entry = Mapping[str, Any]  # {"key": str, "criterion": Criterion.to_json()}


class WorkerOutbox:
    """In a worker: the entries to send, read from the worker's own (append-only) verdict."""

    def __init__(self, verdict: Verdict) -> None:
        self._verdict = verdict
        self._process = uuid4().hex
        self._sent = 0

    def _entries(self, start: int) -> list[dict[str, Any]]:
        criteria = self._verdict.criteria
        return [
            {"key": f"{self._process}:{index}", "criterion": criteria[index].to_json()}
            for index in range(start, len(criteria))
        ]

    def take_new(self) -> list[dict[str, Any]]:
        """The entries recorded since the last call (for the report being made)."""
        entries = self._entries(self._sent)
        self._sent += len(entries)
        return entries

    def everything(self) -> list[dict[str, Any]]:
        """Every entry of this worker (for its workeroutput at shutdown)."""
        return self._entries(0)


class ControllerInbox:
    """In the controller: adds each relayed criterion to the run's verdict once."""

    def __init__(self, verdict: Verdict) -> None:
        self._verdict = verdict
        self._seen: set[str] = set()

    def receive(self, entries: Iterable[Entry]) -> int:
        """Add the entries not seen before; how many were new."""
        added = 0
        for entry in entries:
            key = str(entry["key"])
            if key in self._seen:
                continue
            self._seen.add(key)
            self._verdict.add(Criterion.from_json(entry["criterion"]))
            added += 1
        return added
