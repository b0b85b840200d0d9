"""Two Ray nodes started with `ray start` on loopback; a job pinned to the second node's resource.

The controller is a real `autoprune serve` subprocess that reaches the cluster through
RAY_ADDRESS. Every Ray process this test starts is stopped by it. Ray rewrites 127.0.0.1 into the
machine's outward address, so the nodes take other loopback addresses (127.0.0.2, 127.0.0.3) to
keep all traffic on this machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REFERENCE_GROUP
from workers.pool import LOCAL_OBJECT_STORE_BYTES

# the job uses the zoo reference (trained on a fresh clone): the reference group, which also
# keeps the module's tests on one worker for the module-scoped cluster
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.xdist_group(REFERENCE_GROUP)]

BIN = Path(sys.executable).parent
HEAD_IP, EDGE_IP = "127.0.0.2", "127.0.0.3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _stop(proc: subprocess.Popen, grace: float = 40.0) -> None:
    """SIGTERM a `ray start --block` (it stops its node's processes), SIGKILL the group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One cluster for the module's tests (starting two nodes is most of their time); neither
    test changes it."""
    tmp_path = tmp_path_factory.mktemp("ray-nodes")
    port = _free_port()
    temp_dir = Path("/tmp") / f"ray-mn-{os.getpid()}"  # Ray's socket paths must stay short
    common = ["--num-cpus=1", "--include-dashboard=false", "--block", "--disable-usage-stats",
              f"--object-store-memory={LOCAL_OBJECT_STORE_BYTES}"]  # not 30 % of the host's memory per node
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", f"--node-ip-address={HEAD_IP}",
         f"--temp-dir={temp_dir}", *common],
        env=_ray_env(), stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    procs = [head]
    try:
        _wait_for(lambda: _port_open(HEAD_IP, port), 90, "the Ray head to listen")
        edge = subprocess.Popen(
            [str(BIN / "ray"), "start", f"--address={HEAD_IP}:{port}", f"--node-ip-address={EDGE_IP}",
             '--resources={"edge_device": 1}', *[c for c in common if c != "--include-dashboard=false"]],
            env=_ray_env(), stdout=open(tmp_path / "edge.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,
        )
        procs.append(edge)
        _wait_for(lambda: "edge_device" in _cluster_status(f"{HEAD_IP}:{port}"), 120, "the edge node to join")
        yield f"{HEAD_IP}:{port}"
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _cluster_status(address: str) -> str:
    out = subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=_ray_env(),
                         capture_output=True, text=True, timeout=60)
    return out.stdout


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def test_latency_is_measured_on_the_node_with_the_requested_resource(
    two_node_cluster: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = {**_ray_env(), "RAY_ADDRESS": two_node_cluster, "AUTOPRUNE_DATA_DIR": str(tmp_path / "data"),
           "AUTOPRUNE_CACHE_DIR": os.environ.get("AUTOPRUNE_CACHE_DIR", str(tmp_path / "cache"))}
    server = subprocess.Popen(
        [str(BIN / "autoprune"), "serve", "--port", str(port)], env=env,
        stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(lambda: _healthy(base), 60, "the controller")
        spec = {
            "name": "edge-latency",
            "model": {"zoo": "resnet20"},
            "dataset": {"name": "digits"},
            "budget": {"macs_ratio": 0.5},
            "target": {"device": "cpu", "resources": {"edge_device": 1}},
            "agent": {"kind": "random", "trials": 4},
            "evaluation": {"calibration_batches": 2, "val_samples": 128},
            "finalize": {"top_k": 0},
            "workers": 1,
        }
        job = httpx.post(f"{base}/api/v1/jobs", json=spec, timeout=30).raise_for_status().json()
        deadline = time.monotonic() + 420
        while True:
            job = httpx.get(f"{base}/api/v1/jobs/{job['id']}", timeout=30).json()
            if job["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert job["state"] == "succeeded", (job.get("error"), (tmp_path / "server.log").read_text()[-3000:])
        trials = httpx.get(f"{base}/api/v1/jobs/{job['id']}/trials", timeout=30).json()["items"]
        assert len(trials) == 4
        nodes = {t["node"] for t in trials}
        assert all(n and EDGE_IP in n for n in nodes), f"latency measured off the edge node: {nodes}"
        assert all(t["metrics"]["latency_ms"] > 0 for t in trials if t["metrics"])
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_job_asking_for_a_missing_resource_fails_fast(two_node_cluster: str) -> None:
    """No node offers the resource: the pool refuses at once, naming it."""
    code = (
        "import ray\n"
        f"ray.init(address={two_node_cluster!r}, log_to_driver=False)\n"
        "from workers.pool import actor_options\n"
        "try:\n"
        "    actor_options('cpu', 1, resources={'tpu_v9': 1})\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_ray_env(), capture_output=True, text=True, timeout=120)
    assert "ERR" in out.stdout and "tpu_v9" in out.stdout, out.stdout + out.stderr
