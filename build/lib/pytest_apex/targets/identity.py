"""Who started a stack: the machine, pid namespace, user and process, as container labels.

A Docker engine can be shared by several hosts or CI jobs (its socket mounted into their
containers), each with its own pid namespace: a pid seen in a project name means nothing
outside the namespace it came from. So every stack carries the identity of the process that
owns it, and a stack is only ever judged dead by a process that can prove it is looking at
the same machine, boot and pid namespace, where the pid and its start time can be checked
(the start time, because pids are reused).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

LABEL_PREFIX = "io.pytest-apex."
# The start time is compared at this precision (psutil derives it from clock ticks).
_START_TIME_TOLERANCE_S = 0.05

# The start time (epoch seconds) of a process of this pid namespace, None if no such pid.
ProcessStartTime = Callable[[int], float | None]


def process_start_time(pid: int) -> float | None:
    """The real `ProcessStartTime`: psutil's create time of `pid` in this namespace."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # it exists; somebody else's
        return -1.0


@dataclass(frozen=True)
class RunIdentity:
    """The owner of a stack, as its containers' labels say."""

    host: str  # hash of /etc/machine-id, else of the host name (stable across reboots)
    boot: str  # hash of the kernel's boot id (changes on every boot)
    pid_namespace: str  # e.g. "pid:[4026531836]": pids are only comparable within it
    uid: int
    pid: int
    started: float  # the process start time, epoch seconds
    run: str  # the compose project this identity owns

    @classmethod
    def of_process(cls, pid: int, run: str) -> RunIdentity:
        """The identity of process `pid` (this machine, this namespace) owning `run`."""
        started = process_start_time(pid)
        return cls(
            host=_hashed(_read("/etc/machine-id") or socket.gethostname()),
            boot=_hashed(_read("/proc/sys/kernel/random/boot_id")),
            pid_namespace=_pid_namespace(),
            uid=os.getuid(),
            pid=pid,
            started=started if started is not None else 0.0,
            run=run,
        )

    def labels(self) -> dict[str, str]:
        return {
            f"{LABEL_PREFIX}host": self.host,
            f"{LABEL_PREFIX}boot": self.boot,
            f"{LABEL_PREFIX}pidns": self.pid_namespace,
            f"{LABEL_PREFIX}uid": str(self.uid),
            f"{LABEL_PREFIX}pid": str(self.pid),
            f"{LABEL_PREFIX}started": f"{self.started:.2f}",
            f"{LABEL_PREFIX}run": self.run,
        }

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> RunIdentity | None:
        """The identity the labels carry; None when any part is missing or malformed."""
        try:
            return cls(
                host=labels[f"{LABEL_PREFIX}host"],
                boot=labels[f"{LABEL_PREFIX}boot"],
                pid_namespace=labels[f"{LABEL_PREFIX}pidns"],
                uid=int(labels[f"{LABEL_PREFIX}uid"]),
                pid=int(labels[f"{LABEL_PREFIX}pid"]),
                started=float(labels[f"{LABEL_PREFIX}started"]),
                run=labels[f"{LABEL_PREFIX}run"],
            )
        except (KeyError, ValueError):
            return None

    def why_dead(self, owner: RunIdentity, start_time_of: ProcessStartTime) -> str | None:
        """Why the stack `owner` labels is provably dead, seen from this identity; else None.

        Only a stack of the same machine, user and pid namespace can be judged: another
        host's (or CI container's) pids are not ours to look up.
        """
        if not owner.host or (owner.host, owner.uid) != (self.host, self.uid):
            return None
        if owner.pid_namespace != self.pid_namespace:
            return None
        if owner.boot != self.boot:
            return "it was started before this machine last booted"
        started = start_time_of(owner.pid)
        if started is None:
            return f"its run (pid {owner.pid}) is gone"
        if started >= 0 and abs(started - owner.started) > _START_TIME_TOLERANCE_S:
            return f"its run (pid {owner.pid}) is gone; that pid now belongs to another process"
        return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


def _hashed(value: str) -> str:
    """A short digest: the label identifies the machine without publishing its id."""
    return hashlib.sha256(value.encode()).hexdigest()[:16] if value else ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
