"""The supervised Ray driver process: started lazily, survives its callers' threads, and a Ray
killed mid-evaluation costs no trial (retried on a fresh Ray) and never this process."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from agents.types import Outcome, Proposal
from tests.process_tree import alive, descendants, ray_daemons
from tests.workers.conftest import small_spec
from workers.ray_driver import RayDriver, RayUnavailable
from workers.task import WorkerSettings

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _kill_ray_of(driver: RayDriver) -> list[int]:
    pid = driver.pid()
    assert pid is not None
    victims = list(ray_daemons(pid))
    assert len(victims) == 2, descendants(pid)
    for p in victims:
        os.kill(p, signal.SIGKILL)
    return victims


def _wait_down(driver: RayDriver) -> None:
    deadline = time.monotonic() + 30
    while driver.state() != "down" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.state() == "down"


def test_ray_killed_mid_evaluation_and_between_batches(settings: WorkerSettings) -> None:
    driver = RayDriver(num_cpus=1)
    assert driver.state() == "not_started"
    pools = []
    try:
        holder: list[object] = []
        # opened from a thread that then ends: the driver process, not the thread, owns Ray
        opener = threading.Thread(target=lambda: holder.append(
            driver.open_pool(small_spec("resnet20-digits", workers=1), settings)))
        opener.start()
        opener.join()
        pool = holder[0]
        pools.append(pool)
        assert driver.state() == "running"
        first_driver = driver.pid()
        space = pool.space  # type: ignore[attr-defined]
        proposals = [Proposal(i, space.uniform(0.25 * (i % 3))) for i in range(4)]

        # 1. Ray dies under a running batch: the unfinished trials are retried on a fresh Ray
        out: list[Outcome] = []
        killed: list[int] = []
        for o in pool.evaluate(proposals):  # type: ignore[attr-defined]
            out.append(o)
            if not killed:  # the other three are queued or in flight
                killed = _kill_ray_of(driver)
        assert sorted(o.trial_id for o in out) == [0, 1, 2, 3]  # each once
        assert all(o.ok for o in out), [o.error for o in out]
        assert pool.reopened == 1 and driver.starts == 2  # type: ignore[attr-defined]
        assert driver.pid() != first_driver and driver.state() == "running"
        assert not set(killed) & set(descendants(driver.pid() or 0))

        # 2. Ray dies between batches: reported down with the cause; the next batch restarts it
        second_driver = driver.pid()
        _kill_ray_of(driver)
        _wait_down(driver)
        # the cause names what died: both were killed, the watcher may see either one first
        assert driver.error and "died" in driver.error, driver.error
        assert "raylet" in driver.error or "gcs_server" in driver.error, driver.error
        more = [Proposal(4 + i, space.uniform(0.5)) for i in range(2)]
        out = list(pool.evaluate(more))  # type: ignore[attr-defined]
        assert sorted(o.trial_id for o in out) == [4, 5] and all(o.ok for o in out), out
        assert driver.starts == 3 and driver.pid() != second_driver and driver.state() == "running"
        assert driver.error is None
        last = driver.pid() or 0
        left = descendants(last)
    finally:
        for p in pools:
            p.close()  # type: ignore[attr-defined]
        driver.stop()
    assert driver.state() == "not_started"
    deadline = time.monotonic() + 20
    while any(alive(p) for p in (last, *left)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in (last, *left) if alive(p)], "the driver left processes behind"
    with pytest.raises(RayUnavailable, match="shutting down"):
        driver.ensure_running()


def test_unreachable_cluster_is_a_clear_error() -> None:
    driver = RayDriver(address="127.0.0.1:1")  # nothing listens there
    try:
        with pytest.raises(RayUnavailable, match="Ray did not start"):
            driver.ensure_running()
        assert driver.state() == "down" and driver.error
    finally:
        driver.stop()


def test_controller_killed_takes_its_ray_along() -> None:
    """SIGKILL of the controller alone (not its group): the driver sees its stdin close, and it
    and Ray's processes exit; nothing is left running."""
    import subprocess
    import sys

    code = ("from workers.ray_driver import RayDriver\n"
            "d = RayDriver(num_cpus=1); d.ensure_running(); print(d.pid(), flush=True)\n"
            "import time; time.sleep(600)\n")
    controller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert controller.stdout is not None
        driver_pid = int(controller.stdout.readline())
        ray_pids = list(ray_daemons(driver_pid))
        assert len(ray_pids) == 2
        controller.kill()
        controller.wait(10)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in (driver_pid, *ray_pids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in (driver_pid, *ray_pids) if alive(p)]
    finally:
        controller.kill()
