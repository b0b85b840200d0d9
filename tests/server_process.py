"""A real ``autoprune serve`` in a child process, for tests that kill and restart it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from service.states import FINAL_STATES

#: The tests' own plugin code (entrypoint builders and metrics) that test servers allow; the
#: hostile-input tests check that anything else is refused.
TEST_PLUGINS = ["tests.reliability.helpers", "tests.workers.fakes", "tests.search_spaces.tiny_models"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Starts ``autoprune serve`` in its own session (so a test can SIGKILL the whole group);
    the tests' plugins are allowed unless ``env`` sets ``AUTOPRUNE_PLUGINS``."""
    env = {"AUTOPRUNE_PLUGINS": ",".join(TEST_PLUGINS), **env}
    exe = Path(sys.executable).parent / "autoprune"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "service.cli"]
    return subprocess.Popen([*cmd, "serve"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's whole process group (a crash: nothing gets to clean up)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group, SIGKILL it if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)


def wait_final(url: str, job_id: str, headers: dict[str, str], *, timeout: float, poll: float = 0.5) -> dict[str, Any]:
    """The job once it has ended (or, past ``timeout``, as it stands: the caller asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["state"] in FINAL_STATES or time.monotonic() > deadline:
            return job
        time.sleep(poll)
