"""Training a dense reference once (cached as safetensors); the loop and accuracy are
search_spaces/training.py's.

The cache key is (model source, dataset, seed, classes, channels, epochs, lr): a job that names a
zoo model and built-in data without weights reuses the same reference instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import nn

from search_spaces.data import load_dataset
from search_spaces.threads import torch_threads
from search_spaces.training import evaluate_accuracy, finetune
from search_spaces.zoo import build_model


@torch.no_grad()
def _key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def train_reference(
    model_source: str,
    dataset: str,
    *,
    cache_dir: str | Path,
    seed: int = 0,
    epochs: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    threads: int | None = 1,
) -> tuple[nn.Module, dict[str, Any]]:
    """The dense reference for (model, built-in dataset, seed): trained once, then loaded from cache.

    Returns the model (eval mode) and its info: test/val accuracy, seconds, cache path.
    ``threads`` (intra-op, restored afterwards) defaults to 1: on a shared 2-core host two
    spinning OpenMP threads trained several times slower than one (docs/benchmarks.md,
    "Reference training threads"); ``None`` keeps torch's setting.

    Processes sharing ``cache_dir`` (test workers, a controller and its task processes) train a
    reference once: the first holds a file lock while it trains, the others wait and load it.
    """
    splits = load_dataset(dataset, seed=seed)
    in_channels, num_classes = splits.input_shape[0], splits.num_classes
    key = _key(model=model_source, data=dataset, seed=seed, classes=num_classes, ch=in_channels, epochs=epochs, lr=lr, bs=batch_size)
    base = Path(cache_dir) / f"{model_source.replace(':', '_').replace('/', '_')}-{dataset}-{key}"
    weights, info_file = base.with_suffix(".safetensors"), base.with_suffix(".json")
    torch.manual_seed(seed)
    model = build_model(model_source, num_classes=num_classes, in_channels=in_channels)
    base.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base.with_suffix(".lock"))):
        if weights.exists() and info_file.exists():
            model.load_state_dict(load_file(str(weights)))
            info = json.loads(info_file.read_text())
            info["cached"] = True
            return model.eval(), info
        t0 = time.perf_counter()
        with torch_threads(threads):
            finetune(model, splits.train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        info = {
            "model": model_source,
            "dataset": dataset,
            "seed": seed,
            "epochs": epochs,
            "val_accuracy": evaluate_accuracy(model, splits.val),
            "test_accuracy": evaluate_accuracy(model, splits.test),
            "train_seconds": round(time.perf_counter() - t0, 2),
            "weights": str(weights),
        }
        # each file through a temporary one and a rename: a reader never sees half of one, and
        # the info (whose presence says "cached") comes last
        _write_atomic(weights, lambda tmp: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp)))
        _write_atomic(info_file, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    info["cached"] = False
    return model.eval(), info


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)
