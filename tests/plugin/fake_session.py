"""A fake target session, installed as the conftest.py of pytester runs (no Docker).

It implements the plugin's `pytest_apex_target_session` hook and appends what happens to
`events.jsonl` next to itself, so tests can see what each process (controller, workers) did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pytest_apex.targets.base import ContainerInfo

EVENTS = Path(__file__).with_name("events.jsonl")


def _event(**data: Any) -> None:
    with EVENTS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": os.getpid(), **data}) + "\n")


class FakeTarget:
    name = "compose:apexrun-fake"

    def endpoints(self) -> dict[str, str]:
        return {"backend": "http://127.0.0.1:9"}

    def containers(self) -> list[ContainerInfo]:
        return [
            ContainerInfo(
                service="backend",
                container_id="c0ffee",
                image_id="sha256:feedface",
                state="running",
                health="healthy",
                user="app",
                memory_limit_bytes=0,
                nano_cpus=0,
            )
        ]

    def logs(self, service: str, tail: int = 200) -> str:
        return f"{service} ready\nAuthorization: Bearer sekrit-token-1234567890\n"

    def environment(self, service: str) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        _event(event="stop")


class FakeTargetSession:
    def __init__(self, role: str, workerinput: dict[str, Any] | None = None) -> None:
        self.role = role
        received = {k: v for k, v in (workerinput or {}).items() if k.startswith("apex_")}
        _event(event="created", role=role, workerinput=received)

    def workerinput(self) -> dict[str, str]:
        return {"apex_project": "apexrun-fake", "apex_state_dir": "/nonexistent/apex-state"}

    def acquire(self) -> FakeTarget:
        _event(event="acquire", role=self.role)
        return FakeTarget()

    def describe(self) -> dict[str, str]:
        _event(event="describe", role=self.role)
        return {"target": "compose:apexrun-fake", "image.backend": "sha256:feedface"}

    def finish(self) -> None:
        _event(event="finish", role=self.role)


def pytest_apex_target_session(settings: Any, config: Any) -> FakeTargetSession:
    workerinput = getattr(config, "workerinput", None)
    role = "worker" if workerinput is not None else "controller"
    return FakeTargetSession(role, workerinput)
