"""Ray for a long-running controller: the Ray driver lives in a child process the controller supervises.

Why a child process. Ray's driver cannot be made to survive its cluster from Python:

* ``ray.init()`` starting a local cluster spawns the GCS and raylet with
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (``ray._private.services.start_ray_process`` →
  ``utils.set_kill_on_parent_death_linux``). Linux ties that signal to the *thread* that forked
  them, so a job thread that starts Ray and then ends takes the cluster with it.
* When the raylet or GCS is gone, the driver's C++ core worker ends the whole process
  (``CoreWorkerShutdownExecutor::QuickExit`` after "The connection to the plasma store is
  failed. Terminate the process", or a fatal log after the GCS reconnect timeout). That is
  native code calling ``_exit``; no Python hook can intercept it, and the controller would go
  with it whether the cluster is local or ``RAY_ADDRESS``.

So the controller never imports Ray. :class:`RayDriver` starts ``python -m workers.ray_driver``
once, on the first job that needs Ray; that child calls ``ray.init()`` from its *main* thread
(which lives as long as the child, so the PDEATHSIG is harmless) and hosts every job's
:class:`~workers.pool.RayPool`, one connection and one thread per pool. The child exits when
the controller does (its stdin, a pipe the controller holds, reaches EOF: no thread owns that),
shutting Ray down first; the controller's :meth:`RayDriver.stop` does the same on a clean exit.

If Ray dies anyway (its processes killed, out of memory), the child notices within a second
(a watchdog polls the local processes Ray started; the core worker may also end it first) and
exits; the controller only sees a closed socket. :meth:`RayDriver.state` turns ``down``
(``/healthz`` shows it), a :class:`~workers.remote_pool.RemotePool` mid-evaluation starts a fresh
driver and retries its unfinished trials once, then reports them failed with the cause, and the
next job starts a fresh Ray.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection, Listener
from typing import TYPE_CHECKING, Any

from workers.pool_base import error_text
from workers.remote_pool import RayUnavailable, RemotePool, serve_pool

if TYPE_CHECKING:
    from workers.spec import JobSpec
    from workers.task import WorkerSettings

__all__ = ["RayDriver", "RayUnavailable", "RemotePool", "ray_state", "shared_driver", "shutdown_shared"]

log = logging.getLogger("autoprune.ray")

#: How long the child may take to import Ray and run ``ray.init()`` (slow on a loaded host).
START_TIMEOUT_S = 300.0


# --- controller side --------------------------------------------------------------------------
class RayDriver:
    """Supervises the one Ray driver process of this controller (started lazily, restarted when dead).

    ``address`` is an existing cluster (``RAY_ADDRESS``); ``None`` starts a local one.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket: str | None = None
        self._authkey = b""
        self._dir: str | None = None
        self._ready = False
        self._stopped = False
        self.error: str | None = None  # why it is down, when it is
        self.starts = 0  # successful starts: 1 + the restarts after a death

    # state -----------------------------------------------------------------------------------
    def state(self) -> str:
        """``not_started``, ``starting``, ``running``, or ``down`` (dead now; the next job restarts it)."""
        proc = self._proc
        if proc is None:
            return "down" if self.error else "not_started"
        if proc.poll() is not None:
            return "down"
        return "running" if self._ready else "starting"

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # lifecycle -------------------------------------------------------------------------------
    def ensure_running(self, attempts: int = 3) -> None:
        """Starts the driver if it is not running (after a death: a fresh Ray).

        Further attempts follow a failed start: on a loaded host a raylet can miss Ray's fixed
        30 s registration window (seen right after the previous Ray was killed).
        """
        with self._lock:
            if self._stopped:
                raise RayUnavailable("the controller is shutting down")
            if self._proc is not None and self._proc.poll() is None and self._ready:
                return
            for attempt in range(1, attempts + 1):
                if self._stopped:
                    raise RayUnavailable("the controller is shutting down")
                self._reap()
                try:
                    self._start()
                    return
                except RayUnavailable as exc:
                    if attempt == attempts:
                        raise
                    log.warning("Ray start failed, trying again: %s", exc)

    def _start(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="autoprune-ray-")
        self._socket = os.path.join(self._dir, "driver.sock")
        self._authkey = secrets.token_bytes(32)
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        if self.address:
            env["RAY_ADDRESS"] = self.address
        config = {"socket": self._socket, "authkey": self._authkey.hex(), "num_cpus": self.num_cpus}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "workers.ray_driver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((json.dumps(config) + "\n").encode())
        self._proc.stdin.flush()  # stdin stays open: its EOF tells the child we are gone
        reply = _read_line(self._proc, START_TIMEOUT_S)
        if reply is None or not reply.get("ok"):
            code = self._proc.poll()
            why = (reply or {}).get("error") or (
                f"no answer within {START_TIMEOUT_S:.0f} s" if code is None else f"exit code {code}")
            self._kill()
            self._proc.stdout.close()  # no watcher reads it
            self.error = f"Ray did not start: {why}"
            raise RayUnavailable(self.error)
        self._ready, self.error = True, None
        self.starts += 1
        log.info("Ray driver %d up (%s)", self._proc.pid, reply.get("address"))
        threading.Thread(target=self._watch, args=(self._proc,), name="autoprune-ray-watch",
                         daemon=True).start()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Reads the child's last words (a JSON line) and notes its death."""
        assert proc.stdout is not None
        last: dict[str, Any] = {}
        for line in proc.stdout:
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
        proc.stdout.close()
        code = proc.wait()
        if proc is self._proc and not self._stopped:
            self.error = last.get("error") or f"the Ray driver process exited with code {code}"
            log.error("Ray is down: %s", self.error)

    def _reap(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is not None and not self.error:
                self.error = f"the Ray driver process exited with code {self._proc.returncode}"
            self._kill()
        self._proc, self._ready = None, False

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stop(self, timeout: float = 30.0) -> None:
        """Shuts Ray down: the child sees EOF on stdin, calls ``ray.shutdown()`` and exits.

        Does not wait for a start in progress: that child exits at once on the same EOF.
        """
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        with self._lock:
            proc = self._proc
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            self._kill()
            self._proc, self._ready = None, False

    # pools -----------------------------------------------------------------------------------
    def connect(self) -> Connection:
        self.ensure_running()
        assert self._socket is not None
        try:
            return Client(self._socket, family="AF_UNIX", authkey=self._authkey)
        except OSError as exc:
            raise RayUnavailable(f"cannot reach the Ray driver: {error_text(exc)}") from exc

    def open_pool(self, spec: JobSpec, settings: WorkerSettings) -> RemotePool:
        """``spec.workers`` Ray actors for this job, hosted by the driver process."""
        from workers.pool import JobRayPool

        return RemotePool(self, JobRayPool(spec, settings))


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """The child's next JSON line on stdout, ``None`` if it exits or ``timeout`` passes first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                if not line:
                    return None
                try:
                    return dict(json.loads(line))
                except json.JSONDecodeError:
                    continue
            if proc.poll() is not None:
                return None
    return None


_shared: RayDriver | None = None
_shared_lock = threading.Lock()


def shared_driver(address: str | None = None) -> RayDriver:
    """This process's driver (one Ray per controller), created on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RayDriver(address)
            atexit.register(_shared.stop)
        elif address and _shared.address != address:
            raise RayUnavailable(f"this controller already uses Ray at {_shared.address or 'local'}")
        return _shared


def ray_state() -> dict[str, str]:
    """For ``/healthz``: ``{"ray": "not_started" | "starting" | "running" | "down"}`` (+ ``ray_error``)."""
    driver = _shared
    if driver is None:
        return {"ray": "not_started"}
    state = driver.state()
    out = {"ray": state}
    if state == "down" and driver.error:
        out["ray_error"] = driver.error
    return out


def shutdown_shared() -> None:
    """Stops this process's Ray, if it was started (controller shutdown)."""
    global _shared
    with _shared_lock:
        driver, _shared = _shared, None
    if driver is not None:
        driver.stop()


# --- the driver process -----------------------------------------------------------------------
def _watch_ray(report: Any) -> None:
    """Exits this process as soon as one of the local Ray processes it started has died."""
    import ray._private.worker as ray_worker

    while True:
        time.sleep(1.0)
        node = ray_worker._global_node
        dead: list[tuple[str, Any]] = node.dead_processes() if node is not None else []
        if dead:
            names = ", ".join(f"{kind} (pid {p.pid}, exit {p.returncode})" for kind, p in dead)
            report({"ok": False, "error": f"Ray's local processes died: {names}"})
            os._exit(3)


def _check_reachable(address: str) -> None:
    """Fails in seconds, not after Ray's many-minute GCS retries, when nothing listens there."""
    import socket

    if "://" in address or address == "auto" or ":" not in address:
        return  # ray:// (Ray Client) and "auto": Ray resolves and reports those itself
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc}") from None


def main() -> None:
    """The driver process: ``ray.init()`` in the main thread, one thread per pool, exit on stdin EOF."""
    config = json.loads(sys.stdin.buffer.readline())
    channel = os.fdopen(os.dup(1), "w", buffering=1)  # our JSON lines to the controller
    os.dup2(2, 1)  # anything else Ray or torch prints goes to stderr (the controller's log)
    lock = threading.Lock()
    parent_gone = threading.Event()

    def report(msg: dict[str, Any]) -> None:
        with lock:
            channel.write(json.dumps(msg) + "\n")
            channel.flush()

    def watch_parent() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the controller closed the pipe or died
        parent_gone.set()
        if not ray_up.is_set():
            os._exit(0)  # still starting: nothing to shut down cleanly

    ray_up = threading.Event()
    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        if os.environ.get("RAY_ADDRESS"):
            _check_reachable(os.environ["RAY_ADDRESS"])
        from workers.pool import ensure_ray

        ensure_ray(num_cpus=config.get("num_cpus"))
        import ray

        listener = Listener(config["socket"], family="AF_UNIX", authkey=bytes.fromhex(config["authkey"]))
        address = ray.get_runtime_context().gcs_address
    except BaseException as exc:  # noqa: BLE001 - the controller reports why Ray did not start
        report({"ok": False, "error": error_text(exc)})
        os._exit(2)
    ray_up.set()
    if parent_gone.is_set():
        os._exit(0)
    threading.Thread(target=_watch_ray, args=(report,), daemon=True).start()

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            except Exception:  # noqa: BLE001 - a client failing authentication: ignore it
                continue
            threading.Thread(target=serve_pool, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    report({"ok": True, "address": address, "pid": os.getpid()})
    parent_gone.wait()
    try:
        ray.shutdown()  # from the thread that started it
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
