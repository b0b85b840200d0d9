"""API latency under load on loopback: 50 clients polling while 20 jobs are queued and run.

A real ``uvicorn`` server runs in a subprocess (the real app, runner, SQLite store and agents).
By default it has the service tests' fake launcher: each trial is an analytic "evaluation" that
sleeps ``--delay`` seconds, so jobs produce trials, fronts, events and artifacts without training.
With ``--real`` it has the real workers and the jobs are real and tiny, all ``workers: 0``: the
first trains a ResNet-20 digits reference from an empty cache, the others prune a small CNN
(``tests.reliability.helpers:tiny_net``) with real Torch-Pruning, evaluation and finalize.
40 clients poll (each starting at a random moment within its first interval unless ``--burst``, then waiting
``--interval`` s between requests, 1 s like ``autoprune watch``) ``GET /jobs/{id}``, ``/jobs/{id}/trials``, ``/jobs/{id}/pareto`` and ``GET /jobs``;
10 follow ``/jobs/{id}/events`` (SSE) to the end of a job each, then the next one. The latency
of every polling request is measured at the client; p50/p99 are reported.

    .venv/bin/python bench/api_load.py            # 20 jobs, 50 clients; prints a JSON summary
    .venv/bin/python bench/api_load.py --real     # the same with real tiny jobs
    .venv/bin/python bench/api_load.py --real --profile   # and py-spy records the server (SVG)
    .venv/bin/python bench/api_load.py --profile prof.txt # collapsed stacks + who held the GIL, %

``--reads N`` measures reads alone, closed-loop: 20 jobs are stored first (19 finished, the
newest running, committing a trial every ``--delay`` s), then 50 clients each send N requests
back to back, ``GET /jobs?limit=20`` and ``GET /jobs/{id}`` alternately; it prints p50/p99 and
reads per second, ``--rounds N`` times on one server (the worst round is the summary). The
clients (``--client``): each its own httpx.AsyncClient (the default), one shared AsyncClient
(``httpx-shared``), or raw kept-alive connections (``raw``, ``--raw-client``: a load generator
that costs the shared cores little; httpx costs them more per read than the server does);
``--client-procs N`` spreads them over N processes. ``--code DIR`` serves another checkout's
service (the "before" of a change); ``--http``/``--loop`` pick uvicorn's parser and loop:

    .venv/bin/python bench/api_load.py --reads 20 --rounds 3
    .venv/bin/python bench/api_load.py --reads 20 --rounds 3 --client raw
    .venv/bin/python bench/api_load.py --reads 20 --code /work/main --http h11 --loop asyncio  # before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script, bench/ would shadow the packages (bench/agents.py)
    # (the server of ``--code DIR`` imports that checkout's packages instead)
    sys.path[0] = os.environ.get("AUTOPRUNE_BENCH_CODE", str(ROOT))

FINAL = ("succeeded", "failed", "cancelled")


def _spec(trials: int) -> dict[str, Any]:
    return {"name": "load", "model": {"zoo": "resnet20"}, "dataset": {"name": "digits"},
            "budget": {"macs_ratio": 0.6}, "agent": {"kind": "random", "trials": trials},
            "finalize": {"top_k": 1}, "workers": 2}


def _real_specs(jobs: int, trials: int) -> list[dict[str, Any]]:
    """Real tiny jobs, in-process workers: one trains its reference, the rest prune a small CNN."""
    small = {"evaluation": {"calibration_batches": 1, "val_samples": 128, "batch_size": 64},
             "finalize": {"top_k": 1, "finetune_epochs": 0.1, "export": ["safetensors"]}, "workers": 0,
             "budget": {"macs_ratio": 0.6}, "agent": {"kind": "random", "trials": trials}}
    reference = {**small, "name": "load-reference", "model": {"zoo": "resnet20"}, "dataset": {"name": "digits"},
                 "metric": "accuracy"}
    tiny = {**small, "name": "load-tiny", "model": {"entrypoint": "tests.reliability.helpers:tiny_net"},
            "dataset": {"name": "digits"}, "metric": "agreement", "search_space": {"round_to": 2}}
    return [reference, *[tiny] * (jobs - 1)]


def serve(port: int, data_dir: Path, delay: float, concurrent: int, real: bool = False, http: str = "auto",
          loop: str = "auto") -> None:
    """The server process: the real app on uvicorn, with the fake launcher or the real workers
    (``http``/``loop``: uvicorn's HTTP parser and event loop; ``auto`` is what ``autoprune serve``
    gets: httptools and uvloop when installed)."""
    import uvicorn

    from service.api.app import create_app
    from service.config import Settings
    from tests.service.fakes import FakeLauncher

    # --real: an empty reference cache of its own, so the reference job really trains
    extra: dict[str, Any] = {"cache_dir": data_dir / "reference-cache"} if real else {}
    settings = Settings(data_dir=data_dir, port=port, max_concurrent_jobs=concurrent, **extra)
    launcher = None if real else FakeLauncher(delay=delay)
    uvicorn.run(create_app(settings, launcher=launcher), host="127.0.0.1", port=port, log_level="warning",
                http=http, loop=loop)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile_shares(path: Path) -> dict[str, float]:
    """Shares (%) of py-spy's GIL-holder samples (collapsed stacks, ``--profile x.txt``): by who
    holds the GIL — the runner's job threads, request threads, the event loop — and, counted
    inclusively, how much of it is SQLAlchemy."""
    counts = {"runner": 0, "requests": 0, "event loop": 0, "other": 0, "sqlalchemy": 0}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        total += int(n)
        if "service/runner.py" in stack:
            who = "runner"
        elif "MainThread" in stack.split(";", 1)[0]:
            who = "event loop"
        elif "anyio" in stack or "starlette" in stack:
            who = "requests"
        else:
            who = "other"
        counts[who] += int(n)
        counts["sqlalchemy"] += int(n) if "sqlalchemy/" in stack else 0
    return {k: round(100 * v / total, 1) for k, v in counts.items()} if total else {}


def _kind(url: str) -> str:
    """The route a polled URL belongs to (ids and query strings dropped)."""
    parts = url.split("?")[0].split("/")
    return "GET /jobs" if len(parts) == 4 else "GET /jobs/{id}" + ("/" + parts[5] if len(parts) > 5 else "")


async def _drive(url: str, *, specs: list[dict[str, Any]], clients: int, timeout: float, interval: float,
                 burst: bool = False) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    errors: list[str] = []
    retried: list[str] = []  # GETs sent again after the server closed their kept-alive connection
    sse_events = 0
    streams_ended = 0
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        ids = []
        jobs = len(specs)
        for body in specs:
            r = await http.post("/api/v1/jobs", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text[:200]}")
            ids.append(r.json()["id"])
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        done: dict[str, str] = {}
        pending = list(ids)  # jobs no SSE follower has taken yet

        async def poller(k: int) -> None:
            rng = random.Random(k)
            if not burst:  # independent users: each starts at its own moment within one interval
                await asyncio.sleep(rng.uniform(0, interval))
            while len(done) < jobs and time.monotonic() < deadline:
                job = rng.choice(ids)
                url_ = rng.choice([f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/trials?limit=20",
                                   f"/api/v1/jobs/{job}/pareto", "/api/v1/jobs?limit=20"])
                t = time.perf_counter()
                try:
                    try:
                        r = await http.get(url_)
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        # A kept-alive connection the server closed as it was reused (uvicorn
                        # drops idle ones after 5 s): no response byte came, so a GET is sent
                        # again, as browsers do. Counted, not hidden.
                        retried.append(url_)
                        r = await http.get(url_)
                except httpx.HTTPError as exc:
                    errors.append(f"{url_}: {type(exc).__name__}: {exc}")
                    continue
                ms = (time.perf_counter() - t) * 1000
                latencies.append(ms)
                by_kind.setdefault(_kind(url_), []).append(ms)
                if r.status_code != 200:
                    errors.append(f"{url_}: HTTP {r.status_code}")
                elif url_ == f"/api/v1/jobs/{job}" and r.json()["state"] in FINAL:
                    done[job] = r.json()["state"]
                await asyncio.sleep(interval)

        async def follower() -> None:
            nonlocal sse_events, streams_ended
            while pending and time.monotonic() < deadline:
                job = pending.pop()
                try:
                    async with http.stream("GET", f"/api/v1/jobs/{job}/events", timeout=None) as r:
                        last_state = None
                        async for line in r.aiter_lines():
                            if line.startswith("event:"):
                                sse_events += 1
                            if line.startswith("data:") and '"state"' in line and '"error"' in line:
                                last_state = json.loads(line[5:]).get("state")
                            if time.monotonic() > deadline:
                                break
                    if last_state in FINAL:
                        streams_ended += 1
                        done.setdefault(job, last_state)
                    else:
                        errors.append(f"events of {job} ended in state {last_state}")
                except httpx.HTTPError as exc:
                    errors.append(f"events {job}: {type(exc).__name__}: {exc}")

        n_follow = max(1, clients // 5)
        await asyncio.gather(*[poller(k) for k in range(clients - n_follow)], *[follower() for _ in range(n_follow)])
        wall = time.perf_counter() - t0
        states = {}
        for job in ids:  # the final word comes from the server, not from what the clients saw
            states[job] = (await http.get(f"/api/v1/jobs/{job}")).json()["state"]
    return {
        "jobs": jobs, "clients": clients, "followers": n_follow,
        "trials_per_job": specs[0]["agent"]["trials"], "requests": len(latencies),
        "errors": len(errors), "error_samples": errors[:5], "retried": len(retried),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99), 2), "max_ms": round(max(latencies, default=0), 2),
        "jobs_succeeded": sum(1 for s in states.values() if s == "succeeded"),
        "states": sorted(set(states.values())), "sse_events": sse_events, "sse_streams_ended": streams_ended,
        "wall_s": round(wall, 2),
        "by_route": {k: {"n": len(v), "p50_ms": round(statistics.median(v), 2),
                         "p99_ms": round(_percentile(v, 0.99), 2)} for k, v in sorted(by_kind.items())},
    }


class _RawClient:
    """One kept-alive HTTP/1.1 connection speaking just enough to GET: a load generator that
    costs the shared CPUs little, so the server's own limit shows (httpx costs about what the
    server does per request)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> int:
        if self.conn is None:
            self.conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.conn
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.conn is not None:
            self.conn[1].close()


class _ReadClients:
    """Clients ``ks`` of the closed loop, each on its own kept-alive connection (made before the
    clock starts: an AsyncClient builds an SSL context, not a read's cost) kept across rounds;
    client ``k``'s ``i``-th read is ``GET /jobs?limit=20`` or ``GET /jobs/{id}`` by parity."""

    def __init__(self, url: str, ids: list[str], ks: Iterable[int], reads: int, kind: str,
                 shared: Any = None) -> None:
        import httpx

        self.url, self.ids, self.ks, self.reads, self.shared = url, ids, list(ks), reads, shared
        self.owns = {k: httpx.AsyncClient(base_url=url, timeout=60) if kind == "httpx" else None for k in self.ks}
        self.raws = {k: _RawClient(url) if kind == "raw" else None for k in self.ks}

    async def round(self, latencies: list[float], by_kind: dict[str, list[float]], errors: list[str]) -> None:
        await asyncio.gather(*[self._client(k, latencies, by_kind, errors) for k in self.ks])

    async def _client(self, k: int, latencies: list[float], by_kind: dict[str, list[float]],
                      errors: list[str]) -> None:
        import httpx

        ids = self.ids
        for i in range(self.reads):
            url_ = "/api/v1/jobs?limit=20" if (i + k) % 2 == 0 else f"/api/v1/jobs/{ids[(k + i) % len(ids)]}"
            raw, own = self.raws[k], self.owns[k] or self.shared
            t = time.perf_counter()
            try:
                code = await raw.get(url_) if raw is not None else (await own.get(url_)).status_code
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{url_}: {type(exc).__name__}: {exc}")
                if raw is not None:
                    raw.close()
                    self.raws[k] = _RawClient(self.url)
                continue
            ms = (time.perf_counter() - t) * 1000
            latencies.append(ms)
            by_kind.setdefault(_kind(url_), []).append(ms)
            if code != 200:
                errors.append(f"{url_}: HTTP {code}")

    async def aclose(self) -> None:
        for raw in self.raws.values():
            if raw is not None:
                raw.close()
        for own in self.owns.values():
            if own is not None:
                await own.aclose()


class _ReadWorkers:
    """``procs`` processes sharing the clients (client ``k`` in process ``k % procs``): a load
    generator that can use every core. Each round starts in all at once (a line on their stdin)
    and each answers its latencies, errors and CPU seconds as one JSON line."""

    def __init__(self, url: str, ids: list[str], clients: int, reads: int, kind: str, procs: int,
                 loop: str) -> None:
        self.procs = []
        for j in range(procs):
            config = {"url": url, "ids": ids, "ks": list(range(j, clients, procs)), "reads": reads, "kind": kind}
            self.procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--read-worker",
                                                json.dumps(config), "--client-loop", loop],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in self.procs:  # every client made before the first round
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    def round(self, latencies: list[float], by_kind: dict[str, list[float]], errors: list[str]) -> float:
        """Runs one round in every process; returns their CPU seconds."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        cpu = 0.0
        for proc in self.procs:
            assert proc.stdout is not None
            answer = json.loads(proc.stdout.readline())
            latencies += answer["latencies"]
            errors += answer["errors"]
            for k, v in answer["by_kind"].items():
                by_kind.setdefault(k, []).extend(v)
            cpu += answer["cpu_s"]
        return cpu

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the worker closes its clients and exits
            proc.wait(30)


def read_worker(config: dict[str, Any], loop_kind: str) -> None:
    """A ``--client-procs`` process: its share of the clients, one round per line on stdin."""

    async def main() -> None:
        group = _ReadClients(config["url"], config["ids"], config["ks"], config["reads"], config["kind"])
        print("ready", flush=True)
        while sys.stdin.readline().strip() == "go":
            latencies: list[float] = []
            by_kind: dict[str, list[float]] = {}
            errors: list[str] = []
            cpu0 = time.process_time()
            await group.round(latencies, by_kind, errors)
            print(json.dumps({"latencies": latencies, "by_kind": by_kind, "errors": errors,
                              "cpu_s": time.process_time() - cpu0}), flush=True)
        await group.aclose()

    with asyncio.Runner(loop_factory=_client_loop(loop_kind)) as runner:
        runner.run(main())


#: the load generators of ``--reads``: each client its own httpx.AsyncClient (one kept-alive
#: connection, as 50 users would have); one AsyncClient whose pool all clients share; raw sockets
CLIENT_KINDS = ("httpx", "httpx-shared", "raw")


async def _read(url: str, *, jobs: int, clients: int, reads: int, trials: int, pid: int,
                client_kind: str = "httpx", rounds: int = 1, client_procs: int = 1, client_loop: str = "auto",
                measuring: Callable[[bool], None] | None = None) -> dict[str, Any]:
    """Stores ``jobs`` jobs (all but the newest finished, the newest running), then ``clients``
    clients each send ``reads`` requests back to back: ``GET /jobs?limit=20`` and
    ``GET /jobs/{id}`` alternately (ids in turn). Closed loop: the reads per second is the
    server's throughput, and latency ≈ clients / throughput. ``rounds`` times in a row on the
    same server; the summary is the round with the highest p99, with every round listed.
    ``measuring(True/False)`` is called as the reads start and end (the profiler samples only them)."""
    import httpx

    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        ids = []
        for _ in range(jobs - 1):
            r = await http.post("/api/v1/jobs", json=_spec(trials))
            if r.status_code != 201:
                raise RuntimeError(f"submit failed: {r.status_code} {r.text[:200]}")
            ids.append(r.json()["id"])
        deadline = time.monotonic() + 120
        while True:  # the stored jobs finish first
            states = [(await http.get(f"/api/v1/jobs/{j}")).json()["state"] for j in ids]
            if all(s in FINAL for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"stored jobs did not finish: {states}")
            await asyncio.sleep(0.2)
        r = await http.post("/api/v1/jobs", json=_spec(20_000))  # runs (and commits) throughout
        running = r.json()["id"]
        ids.append(running)
        while (await http.get(f"/api/v1/jobs/{running}")).json()["progress"]["trials_done"] < 2:
            await asyncio.sleep(0.1)
        errors: list[str] = []
        workers = group = None
        if client_procs > 1:
            workers = _ReadWorkers(url, ids, clients, reads, client_kind, client_procs, client_loop)
        else:
            group = _ReadClients(url, ids, range(clients), reads, client_kind, shared=http)

        async def one_round() -> dict[str, Any]:
            latencies: list[float] = []
            by_kind: dict[str, list[float]] = {}
            before = (await http.get(f"/api/v1/jobs/{running}")).json()["progress"]["trials_done"]
            t0, cpu0, client0 = time.perf_counter(), _cpu_seconds(pid), time.process_time()
            worker_cpu_s = 0.0
            if workers is not None:
                worker_cpu_s = workers.round(latencies, by_kind, errors)
            elif group is not None:
                await group.round(latencies, by_kind, errors)
            wall = time.perf_counter() - t0
            server_ms = (_cpu_seconds(pid) - cpu0) * 1000  # the running job's commits included
            client_ms = (time.process_time() - client0 + worker_cpu_s) * 1000
            after = (await http.get(f"/api/v1/jobs/{running}")).json()["progress"]["trials_done"]
            return {
                "requests": len(latencies),
                "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
                "p99_ms": round(_percentile(latencies, 0.99), 2), "max_ms": round(max(latencies, default=0), 2),
                "reads_per_s": round(len(latencies) / wall, 1), "wall_s": round(wall, 2),
                # CPU per read while the clients read: the server's (its job's commits included), the clients'
                "server_cpu_ms_per_read": round(server_ms / max(len(latencies), 1), 2),
                "client_cpu_ms_per_read": round(client_ms / max(len(latencies), 1), 2),
                "running_job_trials_per_s": round((after - before) / wall, 1),  # each one a commit
                "by_route": {k: {"n": len(v), "p50_ms": round(statistics.median(v), 2),
                                 "p99_ms": round(_percentile(v, 0.99), 2)} for k, v in sorted(by_kind.items())},
                "load_avg_1m": os.getloadavg()[0],
            }

        if measuring is not None:
            measuring(True)
        measured = [await one_round() for _ in range(rounds)]
        if measuring is not None:
            measuring(False)
        if group is not None:
            await group.aclose()
        if workers is not None:
            workers.close()
        state = (await http.get(f"/api/v1/jobs/{running}")).json()["state"]
        await http.post(f"/api/v1/jobs/{running}/cancel")
    worst = max(measured, key=lambda m: m["p99_ms"])
    return {
        "jobs": jobs, "clients": clients, "reads_per_client": reads, "client": client_kind,
        "client_procs": client_procs,
        "errors": len(errors), "error_samples": errors[:5], "running_job_state": state,
        **worst,  # the round with the highest p99 (the only one with --rounds 1)
        "rounds": [{k: v for k, v in m.items() if k != "by_route"} for m in measured],
    }


def run_load(*, jobs: int = 20, clients: int = 50, trials: int = 8, delay: float = 0.05, concurrent: int = 2,
             interval: float = 1.0, timeout: float = 240.0, data_dir: Path | None = None, real: bool = False,
             profile: Path | None = None, burst: bool = False, reads: int = 0,
             code: Path | None = None, client: str = "httpx", http: str = "auto",
             loop: str = "auto", client_loop: str = "auto", rounds: int = 1,
             client_procs: int = 1) -> dict[str, Any]:
    """Starts the server subprocess, drives the load, stops the server; returns the summary.

    ``reads`` > 0: the read-only closed-loop load of :func:`_read` instead of the polling one
    (``client``: its load generator, one of :data:`CLIENT_KINDS`; a profile then covers the reads
    only). ``code``: the checkout whose service the server runs (default: this one); ``http``,
    ``loop``: uvicorn's parser and event loop in the server."""
    import httpx

    port = _free_port()
    tmp = Path(data_dir or tempfile.mkdtemp(prefix="autoprune-load-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code or ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]), "AUTOPRUNE_BENCH_CODE": str(code or ROOT)}
    env.pop("AUTOPRUNE_API_TOKEN", None)
    env.pop("AUTOPRUNE_DATABASE_URL", None)
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port), "--dir", str(tmp),
         "--delay", str(delay), "--concurrent", str(concurrent), "--http", http, "--loop", loop,
         *(["--real"] if real else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    spy = None
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - start > 60:
                raise RuntimeError("server did not become healthy in 60 s")
            time.sleep(0.2)
        def spying(on: bool) -> None:  # py-spy samples the server (all its threads, GIL holders marked)
            nonlocal spy
            if profile is None:
                return
            if not on:
                _stop(spy)
                spy = None
                return
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            spy = subprocess.Popen([exe, "record", "--pid", str(proc.pid), "--output", str(profile),
                                    "--format", {".json": "speedscope", ".txt": "raw"}.get(profile.suffix, "flamegraph"),
                                    "--rate", "200" if reads > 0 else "50", "--gil", "--threads", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(0.5)  # py-spy attaches before the reads start

        if reads == 0:
            spying(True)
        specs = _real_specs(jobs, trials) if real else [_spec(trials)] * jobs
        cpu0, wall0, client0 = _cpu_seconds(proc.pid), time.perf_counter(), time.process_time()
        if reads > 0:
            factory = _client_loop(client_loop)
            with asyncio.Runner(loop_factory=factory) as runner:
                summary = runner.run(_read(url, jobs=jobs, clients=clients, reads=reads, trials=trials,
                                           pid=proc.pid, client_kind=client, rounds=rounds,
                                           client_procs=client_procs, client_loop=client_loop,
                                           measuring=spying))
            summary["client_loop"] = "asyncio" if factory is None else "uvloop"
        else:
            summary = asyncio.run(_drive(url, specs=specs, clients=clients, timeout=timeout, interval=interval,
                                         burst=burst))
        cpu = _cpu_seconds(proc.pid) - cpu0
        # what the server process (its child task processes apart) got of a core while it served
        share = round(cpu / (time.perf_counter() - wall0), 2)
        client_share = round((time.process_time() - client0) / (time.perf_counter() - wall0), 2)
        return {"server_http": http, "server_loop": loop, "poll_interval_s": interval, "burst_start": burst,
                "real_jobs": real, "server_cpu_s": round(cpu, 2), "server_cores_used": share,
                "client_cores_used": client_share, "load_avg_1m": os.getloadavg()[0], **summary}
    finally:
        _stop(spy)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _client_loop(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The load generator's event loop factory: ``auto`` is uvloop when installed (as in the
    server), else asyncio's."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def _stop(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes the profile and exits
        spy.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--trials", type=int, default=8, help="trials per job")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per fake evaluation")
    ap.add_argument("--concurrent", type=int, default=2, help="max_concurrent_jobs of the server")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds each poller waits between requests")
    ap.add_argument("--timeout", type=float, default=240.0)
    ap.add_argument("--burst", action="store_true",
                    help="all pollers start at the same instant (default: each at a random moment within its first interval)")
    ap.add_argument("--real", action="store_true", help="real tiny jobs (workers: 0, one trains its reference)")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy output (.svg flame graph, .json speedscope, .txt collapsed stacks)")
    ap.add_argument("--reads", type=int, default=0,
                    help="read-only closed loop: jobs stored first (one running), each client sends this many reads")
    ap.add_argument("--client", choices=CLIENT_KINDS, default="httpx",
                    help="--reads' load generator: each client its own httpx.AsyncClient (default), one shared "
                         "httpx.AsyncClient, or raw kept-alive HTTP/1.1 connections (a cheap load generator)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="--reads: measure this many rounds in a row on one server; the worst p99 is reported")
    ap.add_argument("--client-procs", type=int, default=1,
                    help="--reads: spread the clients over this many processes (a load generator using every core)")
    ap.add_argument("--read-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--client-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="--reads' clients' event loop (auto: uvloop when installed)")
    ap.add_argument("--raw-client", action="store_true", help="the same as --client raw")
    ap.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                    help="uvicorn's HTTP parser in the server (auto: httptools when installed)")
    ap.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="uvicorn's event loop in the server (auto: uvloop when installed)")
    ap.add_argument("--code", type=Path, default=None,
                    help="serve this checkout's service (e.g. /work/main for the code before a change)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_worker is not None:
        read_worker(json.loads(args.read_worker), args.client_loop)
        return
    if args.serve:
        serve(args.port, args.dir, args.delay, args.concurrent, args.real, args.http, args.loop)
        return
    summary = run_load(jobs=args.jobs, clients=args.clients, trials=args.trials, delay=args.delay,
                       concurrent=args.concurrent, interval=args.interval, timeout=args.timeout, real=args.real,
                       profile=args.profile, burst=args.burst, reads=args.reads, code=args.code,
                       client="raw" if args.raw_client else args.client, http=args.http, loop=args.loop,
                       client_loop=args.client_loop, rounds=args.rounds, client_procs=args.client_procs)
    print(json.dumps(summary, indent=2))
    if args.profile is not None and args.profile.suffix == ".txt":
        print(f"GIL-holder samples, % (py-spy, {args.profile}): {profile_shares(args.profile)}")
    if args.reads:
        for i, r in enumerate(summary["rounds"], 1):
            print(f"round {i} ({summary['client']} clients): p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"{r['reads_per_s']} reads/s over {r['requests']} requests; CPU per read: the server "
                  f"{r['server_cpu_ms_per_read']} ms, the clients {r['client_cpu_ms_per_read']} ms; the running "
                  f"job {r['running_job_trials_per_s']} trials/s (load average {r['load_avg_1m']:.1f})")
        print(f"reads ({summary['client']} clients, worst round): p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
              f"{summary['reads_per_s']} reads/s; {summary['errors']} errors in all")
        return
    print(f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms over {summary['requests']} requests; "
          f"{summary['jobs_succeeded']}/{summary['jobs']} jobs succeeded in {summary['wall_s']} s; "
          f"{summary['errors']} errors, {summary['retried']} GETs retried on a closed kept-alive connection; "
          f"the server used {summary['server_cores_used']} of a core "
          f"(load average {summary['load_avg_1m']:.1f})")


if __name__ == "__main__":
    main()
