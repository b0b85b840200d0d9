"""Training a dense reference once (cached as safetensors), fine-tuning, and accuracy.

The cache key is (model source, dataset, seed, classes, channels, epochs, lr): a job that names a
zoo model and built-in data without weights reuses the same reference instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from search_spaces.data import load_dataset
from search_spaces.threads import torch_threads
from search_spaces.zoo import build_model


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: TensorDataset | Iterable[Any], *, batch_size: int = 256) -> float:
    """Top-1 accuracy (eval mode) over a dataset or an iterable of ``(x, y)`` batches."""
    model.eval()
    loader = DataLoader(data, batch_size=batch_size) if isinstance(data, TensorDataset) else data
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("evaluate_accuracy: the data is empty")
    return correct / total


def _shift(x: torch.Tensor, gen: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Random translation by up to ``pixels`` (padding + crop), a cheap augmentation."""
    if x.dim() < 3 or pixels == 0:
        return x
    pad = [pixels] * (2 * (x.dim() - 2))
    padded = nn.functional.pad(x, pad)
    offs = torch.randint(0, 2 * pixels + 1, (x.dim() - 2,), generator=gen).tolist()
    if x.dim() == 4:
        return padded[..., offs[0] : offs[0] + x.shape[2], offs[1] : offs[1] + x.shape[3]]
    return padded[..., offs[0] : offs[0] + x.shape[2]]


def finetune(
    model: nn.Module,
    data: TensorDataset,
    *,
    epochs: float = 1.0,
    steps: int | None = None,
    lr: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 5e-4,
    augment: bool = True,
) -> nn.Module:
    """SGD (momentum 0.9, cosine-decayed ``lr``) for ``steps`` steps or ``epochs`` epochs, in place."""
    n_batches = max(1, math.ceil(len(data) / batch_size))
    total = steps if steps is not None else max(1, round(epochs * n_batches))
    if total <= 0:
        return model
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=len(data) > batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    model.train()
    step = 0
    while step < total:
        for x, y in loader:
            if augment:
                x = _shift(x, gen)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
            step += 1
            if step >= total:
                break
    model.eval()
    return model


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
    spinning OpenMP threads trained several times slower than one (measured: 724 s vs 99 s for
    ResNet-20 on digits, 6 epochs); ``None`` keeps torch's setting.
    """
    splits = load_dataset(dataset, seed=seed)
    in_channels, num_classes = splits.input_shape[0], splits.num_classes
    key = _key(model=model_source, data=dataset, seed=seed, classes=num_classes, ch=in_channels, epochs=epochs, lr=lr, bs=batch_size)
    base = Path(cache_dir) / f"{model_source.replace(':', '_').replace('/', '_')}-{dataset}-{key}"
    weights, info_file = base.with_suffix(".safetensors"), base.with_suffix(".json")
    torch.manual_seed(seed)
    model = build_model(model_source, num_classes=num_classes, in_channels=in_channels)
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
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(weights)  # atomic: a concurrent reader never sees a half-written file
    info_file.write_text(json.dumps(info, indent=2))
    info["cached"] = False
    return model.eval(), info
