"""A job with ``search_space.depth: true`` end to end (issue 22): submitted over REST, searched,
finalized by the real workers in this process; its artifact lists the removed blocks, its bundle
rebuilds the shallower model and its ONNX file runs in onnxruntime.

A tiny random residual CNN (``tiny_resnet``: four blocks, three removable; no reference training)
on digits (small splits), scored by agreement; the agent is a fixed script (a depth-only baseline, then a policy removing blocks and narrowing the rest) so the
test does not depend on what the search agents propose.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from agents.base import Agent
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import Policy, SearchSpace
from service.launcher import Launched
from tests.service.conftest import make_settings, wait_state
from tests.workers.conftest import shrunk
from workers.spec import JobSpec

GONE = ["blocks.1", "blocks.3"]  # removed by the searched policy
SHALLOW = ["blocks.0"]  # removed by the depth-only baseline


class DepthScript(Agent):
    """Proposes a depth-only baseline, then one depth + width policy; nothing else."""

    name = "depth-script"
    proposes_baseline = False

    def __init__(self, space: SearchSpace, budget: Budget, **_: Any) -> None:
        super().__init__(space, budget)
        self.policies: list[tuple[Policy, dict[str, Any]]] = [
            (space.with_removed(space.uniform(0.0), SHALLOW), {"role": "depth-only"}),
            (space.with_removed(space.uniform(0.3), GONE), {}),
        ]

    def propose(self, n: int) -> list[Proposal]:
        start = self._next_trial_id
        return [self._proposal(p, **info) for p, info in self.policies[start : start + n]]

    def observe(self, outcomes: list[Outcome]) -> None:
        pass

    @property
    def finished(self) -> bool:
        return self._next_trial_id >= len(self.policies) and not self.outstanding()


def in_process_launcher(settings: Any) -> Any:
    """The real task, evaluator and finalize, in this process (no child process, no Ray)."""
    from service.launch import worker_settings
    from workers.evaluator import Evaluator
    from workers.pool import InProcessPool
    from workers.process_pool import finalize_outcomes
    from workers.task import load_task

    def launch(spec: JobSpec) -> Launched:
        task = shrunk(load_task(spec, worker_settings(settings)), train=64, test=64)
        pool = InProcessPool(Evaluator(task, latency_rounds=3))

        def finalize(candidates: list[Outcome], out: Path, on: Any = None) -> list[Any]:
            return finalize_outcomes(task, candidates, out, on)

        return Launched(space=task.space, dense_metrics=pool.dense_metrics, pool=pool, finalize=finalize)

    return launch


def test_a_depth_job_ships_the_shallower_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    import agents.registry
    from search_spaces.bundle import load_bundle
    from service.api.app import create_app

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'depth.db'}")
    torch.manual_seed(0)
    monkeypatch.setattr(agents.registry, "make_agent", lambda name, space, budget, **kw: DepthScript(space, budget))
    spec = {
        "name": "depth", "model": {"entrypoint": "tests.search_spaces.tiny_models:tiny_resnet"}, "dataset": {"name": "digits"},
        "metric": "agreement", "budget": {"macs_ratio": 0.9}, "agent": {"kind": "uniform", "trials": 2},
        "search_space": {"depth": True},
        "evaluation": {"recovery": "bn", "calibration_batches": 1, "batch_size": 64, "val_samples": 64},
        "finalize": {"top_k": 1, "baseline": True, "finetune_epochs": 0, "export": ["onnx", "safetensors"]},
        "workers": 0,
    }
    with TestClient(create_app(settings, launcher=in_process_launcher(settings))) as c:
        r = c.post("/api/v1/jobs", json=spec)
        assert r.status_code == 201, r.text
        job = r.json()
        done = wait_state(c, job["id"], ("succeeded", "failed"), timeout=300)
        assert done["state"] == "succeeded", done["error"]
        # the job's space lists the removable blocks (the dashboard draws the removed ones)
        assert [u["name"] for u in done["space"]["units"]] == ["blocks.0", "blocks.1", "blocks.3"]
        trials = c.get(f"/api/v1/jobs/{job['id']}/trials").json()["items"]
        searched = next(t for t in trials if not (t["info"] or {}).get("role"))
        assert {k for k, v in searched["policy"].items() if k.endswith("@keep") and v == 0} == {f"{u}@keep" for u in GONE}
        assert searched["metrics"]["extra"]["signature"].endswith("|drop:1,2")  # latency cached per architecture
        arts = sorted(c.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"], key=lambda a: a["rank"])
        assert [a["metrics"].get("role") for a in arts] == [None, "depth-only"]
        assert arts[0]["metrics"]["removed_units"] == GONE and arts[1]["metrics"]["removed_units"] == SHALLOW
        assert done["delivery"]["budget_met"] is None  # no latency term
        pulled = c.get(arts[0]["download_url"])
        assert pulled.status_code == 200
    out = tmp_path / "pulled"
    zipfile.ZipFile(io.BytesIO(pulled.content)).extractall(out)
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["removed"] == GONE and not set(GONE) & set(arch["kept_layers"])
    assert arch["kept_layers"] == arts[0]["metrics"]["kept_layers"] == ["blocks.0"]
    model = load_bundle(out, trusted=True)  # the test's own plugin  # the removed blocks rebuilt as identities, the weights loaded strictly
    assert all(isinstance(model.get_submodule(u), nn.Identity) for u in GONE)
    x = torch.randn(3, *arch["input_shape"])
    (got,) = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-4)
