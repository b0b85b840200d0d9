"""A small real task shared by the worker tests: digits / resnet20 with saved random weights.

Random (untrained) weights keep the tests from training a reference; the ``agreement`` metric
is meaningful for any weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.spec import JobSpec
from workers.task import Task, WorkerSettings, load_task


def small_spec(weights: str, **overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "model": {"zoo": "resnet20", "weights": weights},
        "dataset": {"name": "digits"},
        "metric": "agreement",
        "budget": {"macs_ratio": 0.5},
        "evaluation": {"calibration_batches": 1, "batch_size": 64, "val_samples": 64},
        "workers": 0,
    }
    data.update(overrides)
    return JobSpec.model_validate(data)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    from search_spaces.zoo import build_model

    d = tmp_path_factory.mktemp("uploads")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1)
    save_file(model.state_dict(), str(d / "resnet20-digits"))
    return d


@pytest.fixture(scope="session")
def settings(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> WorkerSettings:
    return WorkerSettings(cache_dir=tmp_path_factory.mktemp("cache"), uploads_dir=weights_dir)


@pytest.fixture(scope="session")
def task(settings: WorkerSettings) -> Task:
    return load_task(small_spec("resnet20-digits"), settings)


def variant(task: Task, **overrides: Any) -> Task:
    """The same model and space under a changed spec (no reload, no re-trace)."""
    return dataclasses.replace(task, spec=small_spec("resnet20-digits", **overrides))


def shrunk(task: Task, *, train: int = 64, test: int = 32) -> Task:
    """The task with small train/test splits: finalization mechanics without the full epochs."""
    from torch.utils.data import TensorDataset

    sp = task.splits

    def head(ds: TensorDataset, n: int) -> TensorDataset:
        return TensorDataset(*(t[:n] for t in ds.tensors))

    splits = dataclasses.replace(sp, train=head(sp.train, train), test=head(sp.test, test))
    return dataclasses.replace(task, splits=splits)
