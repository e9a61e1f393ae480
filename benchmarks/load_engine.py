"""How fast the load engine is on this machine, next to Locust and wrk (not a timed test).

``http`` (default): a minimal local endpoint (uvicorn, a tiny ASGI app answering a small
JSON, 127.0.0.1 on an ephemeral port, pinned to one core), then, one after the other, each
generator pinned to another core at the same concurrency (closed loop, no think time):

  engine  this engine (`ClosedStage`, `HttpSessionFactory`: aiohttp, uvloop when installed)
  locust  Locust's `FastHttpUser`, headless, as a subprocess
  wrk     wrk (C, the ceiling a Python generator can be compared with)

The last line is exactly ``ratio_vs_locust=R p50_vs_wrk=P``: R is the engine's requests/s
over Locust's (goal >= 1.5), P the engine's p50 over wrk's (goal <= 1.5). In a closed loop
p50 is about concurrency / throughput, so P also says how close the engine comes to wrk.

``--engine-only``: the engine alone, with its RSS after a warm-up and at the end (goal:
< 5 MB of growth over a 10-minute constant load).

``--websockets``: how many concurrent WebSocket sessions one engine process holds on one
core (each sending a message a second and timing its echo) and at what RSS. Goal: >= 5,000
sessions under 1 GB.

    .venv/bin/python benchmarks/load_engine.py [--duration 10] [--concurrency 50]
    .venv/bin/python benchmarks/load_engine.py --websockets [--sessions 5000] [--ramp 5]
    .venv/bin/python benchmarks/load_engine.py --engine-only --duration 600   # RSS growth

Needs: ``pip install -e '.[bench,fast]'`` (Locust, uvicorn, httptools, uvloop) and wrk
(Debian: ``apt-get install -y wrk``). Every run is bounded in time and in count, and talks
only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = b'{"ok":true,"service":"bench"}'
LOCUSTFILE = """
from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/")
"""


# --- the endpoint -------------------------------------------------------------------------


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny ASGI app: ``GET`` anything answers `BODY`; ``/ws`` echoes every message."""
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})


def serve(fd: int) -> None:
    """uvicorn on the inherited listening socket.

    Handed over as a socket object, not as ``fd=``: uvicorn takes an ``fd`` for a Unix
    socket and then leaves Nagle on for TCP, and its two writes per response (head, body)
    wait on the client's delayed ACK: 40 ms a request, whatever the generator.
    """
    import uvicorn

    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    config = uvicorn.Config(
        app,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http=http,
        ws="websockets-sansio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=8192,
        ws_ping_interval=None,
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


class Server:
    """The endpoint as a pinned subprocess on a socket this process bound (ephemeral port)."""

    def __init__(self, core: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8192)
        self.port = self.sock.getsockname()[1]
        fd = self.sock.fileno()
        self.process = subprocess.Popen(
            [*_pin(core), sys.executable, __file__, "_serve", str(fd)], pass_fds=(fd,)
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the endpoint exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                    if conn.recv(1024).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the endpoint did not answer within {timeout_s:g} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.sock.close()


def _pin(core: int | None) -> list[str]:
    if core is None:
        return []
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found (Debian: apt-get install -y util-linux)")
    return ["taskset", "-c", str(core)]


# --- the generators -----------------------------------------------------------------------


class RssSampler:
    """This process's RSS every second: the peak, and the growth after a warm-up."""

    def __init__(self, warmup_s: float) -> None:
        import psutil

        self.process = psutil.Process()
        self.warmup_s = warmup_s
        self.samples: list[tuple[float, int]] = []

    async def run(self) -> None:
        began = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - began, self.process.memory_info().rss))
            await asyncio.sleep(1.0)

    def figures(self) -> dict[str, float]:
        after = [rss for at, rss in self.samples if at >= self.warmup_s] or [self.samples[-1][1]]
        return {
            "rss_mb_peak": max(rss for _, rss in self.samples) / 2**20,
            "rss_mb_after_warmup": after[0] / 2**20,
            "rss_mb_end": self.samples[-1][1] / 2**20,
            "rss_growth_mb": (after[-1] - after[0]) / 2**20,
        }


def _with_rss(coroutine: Any, warmup_s: float) -> tuple[Any, dict[str, float]]:
    from pytest_apex.load.engine import event_loop_factory

    sampler = RssSampler(warmup_s)

    async def main() -> Any:
        task = asyncio.get_running_loop().create_task(sampler.run())
        try:
            return await coroutine
        finally:
            task.cancel()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(main())
    return result, sampler.figures()


def engine_http(url: str, users: int, duration_s: float) -> dict[str, Any]:
    """This engine, closed loop, `users` users; run inside the pinned subprocess."""
    from pytest_apex.load.engine import EngineSettings, run_plan
    from pytest_apex.load.http import HttpSessionFactory
    from pytest_apex.load.stages import ClosedStage

    factory = HttpSessionFactory(url, limit=users)
    result, rss = _with_rss(
        run_plan(
            [ClosedStage(users=users, duration_s=duration_s, max_requests=100_000_000)],
            factory,
            settings=EngineSettings(progress_interval_s=3600),
        ),
        warmup_s=min(60.0, duration_s / 5),
    )
    stage = result.stages[0]
    latency = stage.latency()
    return {
        "requests_per_s": stage.requests_per_s,
        "p50_ms": latency.p50_s * 1000,
        "p99_ms": latency.p99_s * 1000,
        "requests": stage.completed,
        "errors": dict(stage.errors),
        "cpu_percent": stage.health.cpu_percent,
        "uvloop": _has("uvloop"),
        **rss,
    }


def engine_websockets(
    url: str, sessions: int, ramp_s: float, hold_s: float, interval_s: float
) -> dict[str, Any]:
    """This engine holding `sessions` WebSockets; run inside the pinned subprocess."""
    from pytest_apex.load.engine import EngineSettings, run_plan
    from pytest_apex.load.http import WebSocketSessionFactory
    from pytest_apex.load.stages import ClosedStage

    held = {"now": 0, "max": 0}

    class Counting(WebSocketSessionFactory):
        async def connect(self) -> Any:
            ws = await super().connect()
            held["now"] += 1
            held["max"] = max(held["max"], held["now"])
            original = ws.close

            async def close(*args: Any, **kwargs: Any) -> Any:
                held["now"] -= 1
                return await original(*args, **kwargs)

            ws.close = close  # type: ignore[method-assign]
            return ws

    result, rss = _with_rss(
        run_plan(
            [ClosedStage(sessions, ramp_s + hold_s, ramp_s, max_requests=10_000_000)],
            Counting(url, interval_s=interval_s, timeout_s=10),
            settings=EngineSettings(progress_interval_s=3600, grace_s=10),
        ),
        warmup_s=ramp_s,
    )
    stage = result.stages[0]
    message = stage.latency("ws_message") if "ws_message" in stage.ops else None
    return {
        "sessions_held": held["max"],
        "sessions_asked": sessions,
        "rss_mb": rss["rss_mb_peak"],
        "cpu_percent": stage.health.cpu_percent,
        "loop_lag_p99_ms": stage.health.lag_p99_s * 1000,
        "messages": stage.ops["ws_message"].ok if "ws_message" in stage.ops else 0,
        "message_p50_ms": message.p50_s * 1000 if message else None,
        "message_p99_ms": message.p99_s * 1000 if message else None,
        "errors": dict(stage.errors),
    }


class ChildCpu:
    """CPU the generator subprocess used (user + system, % of one core over its run)."""

    def __enter__(self) -> ChildCpu:
        self.began = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = usage.ru_utime + usage.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.percent = (
            100 * (usage.ru_utime + usage.ru_stime - self.cpu) / (time.monotonic() - self.began)
        )


def _run_json(command: list[str], timeout_s: float) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def locust(url: str, users: int, duration_s: float, core: int | None) -> dict[str, Any]:
    executable = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    with tempfile.TemporaryDirectory() as tmp:
        locustfile = Path(tmp, "locustfile.py")
        locustfile.write_text(LOCUSTFILE, encoding="utf-8")
        prefix = str(Path(tmp, "bench"))
        command = [
            *_pin(core),
            executable,
            "-f",
            str(locustfile),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{duration_s:g}s",
            "--host",
            url,
            "--csv",
            prefix,
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        subprocess.run(command, capture_output=True, timeout=duration_s + 60, check=False, cwd=tmp)
        with open(prefix + "_stats.csv", encoding="utf-8") as stats:
            rows = {row["Name"]: row for row in csv.DictReader(stats)}
    total = rows["Aggregated"]
    return {
        "requests_per_s": float(total["Requests/s"]),
        "p50_ms": float(total["50%"]),
        "requests": int(total["Request Count"]),
        "errors": int(total["Failure Count"]),
    }


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, users: int, duration_s: float, core: int | None) -> dict[str, Any]:
    command = [
        *_pin(core),
        "wrk",
        "-t1",
        f"-c{users}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        url + "/",
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    assert p50, out
    return {"requests_per_s": rps, "p50_ms": float(p50.group(1)) * _WRK_UNITS[p50.group(2)]}


# --- the run ------------------------------------------------------------------------------


def missing_tools(engine_only: bool) -> list[str]:
    missing = []
    if not _has("uvicorn"):
        missing.append("uvicorn (pip install -e '.[bench]', or pip install uvicorn httptools)")
    if not engine_only:
        if not (shutil.which("locust") or Path(sys.executable).with_name("locust").exists()):
            missing.append("Locust (pip install -e '.[bench]', or pip install 'locust>=2.20')")
        if shutil.which("wrk") is None:
            missing.append("wrk (Debian: apt-get install -y wrk)")
    return missing


def _caveat(engine: dict[str, Any], theirs: dict[str, Any], ceiling: dict[str, Any]) -> str:
    """What limited the figures, so a reader does not take a busy machine's for the engine's."""
    rates = [engine["requests_per_s"], theirs["requests_per_s"], ceiling["requests_per_s"]]
    if min(rates) >= 0.85 * max(rates):
        return (
            "note: all three generators got the same rate: the endpoint was the limit, so the "
            "ratios compare the endpoint with itself"
        )
    shared = [
        f"{name} {figures['process_cpu_percent']:.0f} %"
        for name, figures in (("engine", engine), ("locust", theirs))
        if figures["process_cpu_percent"] < 80 and figures["requests_per_s"] < 0.85 * max(rates)
    ]
    if shared:
        return (
            "note: " + ", ".join(shared) + " of a core while slower than wrk: the generator core "
            "was shared with other work on this machine; the figures are lower bounds"
        )
    return "note: each generator was the limit on its own core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per generator")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--generator-core", type=int, default=1)
    parser.add_argument(
        "--engine-only",
        action="store_true",
        help="only this engine (no Locust, no wrk): e.g. its RSS growth over --duration 600",
    )
    parser.add_argument("--websockets", action="store_true")
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to open the sessions")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds to hold them all")
    parser.add_argument("--interval", type=float, default=1.0, help="s between messages")
    args = parser.parse_args()
    if not 0 < args.duration <= 900 or not 0 < args.hold + args.ramp <= 600:
        raise SystemExit("durations must be within 0..600 s")
    if os.cpu_count() and os.cpu_count() < 2:
        print("warning: one core: endpoint and generator share it", file=sys.stderr)
    missing = missing_tools(args.websockets or args.engine_only)
    if missing:
        raise SystemExit("missing: " + "; ".join(missing))

    server = Server(args.server_core)
    try:
        server.wait_ready()
        pinned = _pin(args.generator_core)
        if args.websockets:
            ws_url = server.url.replace("http://", "ws://") + "/ws"
            figures = _run_json(
                [
                    *pinned,
                    sys.executable,
                    __file__,
                    "_ws_engine",
                    json.dumps([ws_url, args.sessions, args.ramp, args.hold, args.interval]),
                ],
                args.ramp + args.hold + 120,
            )
            print(json.dumps(figures))
            print(
                f"websocket_sessions={figures['sessions_held']} "
                f"rss_mb={figures['rss_mb']:.0f} cpu_percent={figures['cpu_percent']:.0f}"
            )
            return
        users, duration = args.concurrency, args.duration
        with ChildCpu() as cpu:
            engine = _run_json(
                [
                    *pinned,
                    sys.executable,
                    __file__,
                    "_engine",
                    json.dumps([server.url, users, duration]),
                ],
                duration + 60,
            )
        engine["process_cpu_percent"] = cpu.percent
        print("engine", json.dumps(engine), flush=True)
        if args.engine_only:
            print(
                f"engine_requests_per_s={engine['requests_per_s']:.0f} "
                f"rss_growth_mb={engine['rss_growth_mb']:.1f} over {duration:g} s"
            )
            return
        with ChildCpu() as cpu:
            theirs = locust(server.url, users, duration, args.generator_core)
        theirs["process_cpu_percent"] = cpu.percent
        print("locust", json.dumps(theirs), flush=True)
        with ChildCpu() as cpu:
            ceiling = wrk(server.url, users, duration, args.generator_core)
        ceiling["process_cpu_percent"] = cpu.percent
        print("wrk   ", json.dumps(ceiling), flush=True)
    finally:
        server.stop()
    print(_caveat(engine, theirs, ceiling))
    ratio = engine["requests_per_s"] / theirs["requests_per_s"]
    p50 = engine["p50_ms"] / ceiling["p50_ms"]
    print(
        f"{users} connections, {duration:g} s each, endpoint on core {args.server_core}, "
        f"generators on core {args.generator_core}"
    )
    print(f"ratio_vs_locust={ratio:.2f} p50_vs_wrk={p50:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_engine":
        print(json.dumps(engine_http(*json.loads(sys.argv[2]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "_ws_engine":
        print(json.dumps(engine_websockets(*json.loads(sys.argv[2]))))
    else:
        main()
