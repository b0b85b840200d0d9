"""Datasets (splits, determinism, path confinement) and the cached reference training."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from search_spaces import load_dataset
from search_spaces.datasets.local import confine
from search_spaces.reference import train_reference
from search_spaces.training import evaluate_accuracy, finetune
from search_spaces.zoo import build_model


def test_digits_split_is_deterministic_disjoint_and_one_channel() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=0)
    assert a.input_shape == (1, 32, 32) and a.num_classes == 10
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert len(a.val) < len(a.train) and len(a.test) == 360
    c = load_dataset("digits", seed=1)
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # val is carved from train: no example appears in both val and test
    val = {t.numpy().tobytes() for t in a.val.tensors[0]}
    assert not val & {t.numpy().tobytes() for t in a.test.tensors[0]}


def test_mnist1d_is_generated_offline_with_a_fixed_seed() -> None:
    a = load_dataset("mnist1d")
    assert a.input_shape == (1, 40) and a.num_classes == 10
    assert len(a.test) == 1000
    assert torch.equal(a.test.tensors[0], load_dataset("mnist1d").test.tensors[0])


def test_synthetic_takes_shape_and_classes() -> None:
    s = load_dataset("synthetic", input_shape=(2, 8), num_classes=3)
    assert s.input_shape == (2, 8) and s.num_classes == 3


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(KeyError, match="digits"):
        load_dataset("nope")


def test_local_paths_are_confined_to_roots(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "ok").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    os.symlink(outside, root / "link")
    assert confine(root / "ok", [root]) == (root / "ok").resolve()
    for bad in (outside, root / ".." / "secret", root / "link"):
        with pytest.raises(ValueError, match="outside the configured data roots") as info:
            load_dataset("cifar10", path=str(bad), roots=[str(root)])
        assert str(bad) in str(info.value)
    with pytest.raises(ValueError, match="no data roots"):
        load_dataset("image_folder", path=str(root / "ok"), roots=[])


def _write_cifar(base: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        (base / name).write_bytes(pickle.dumps(batch))


def test_cifar10_reads_batches_and_refuses_code(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    _write_cifar(base, 100)
    s = load_dataset("cifar10", path=str(tmp_path), roots=[str(tmp_path)])
    assert s.input_shape == (3, 32, 32) and len(s.test) == 100 and len(s.train) + len(s.val) == 100

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    (base / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", path=str(tmp_path), roots=[str(tmp_path)])


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.new("RGB", (20, 20), colour).save(tmp_path / cls / f"{i}.png")
    s = load_dataset("image_folder", path=str(tmp_path), roots=[str(tmp_path)])
    assert s.input_shape == (3, 32, 32) and s.num_classes == 2


@pytest.mark.slow
def test_finetune_learns_and_reference_is_cached(tmp_path: Path) -> None:
    source = "entrypoint:tests.search_spaces.tiny_models:tiny_cnn"
    model, info = train_reference(source, "digits", cache_dir=tmp_path, seed=0, epochs=2, lr=0.05)
    assert not info["cached"] and info["test_accuracy"] > 0.6  # chance is 0.1
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again, info2 = train_reference(source, "digits", cache_dir=tmp_path, seed=0, epochs=2, lr=0.05)
    assert info2["cached"] and info2["test_accuracy"] == info["test_accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))

    splits = load_dataset("digits")
    fresh = build_model(source, num_classes=10, in_channels=1)
    before = evaluate_accuracy(fresh, splits.val)
    finetune(fresh, splits.train, steps=40, lr=0.05)
    assert evaluate_accuracy(fresh, splits.val) > before + 0.2


def test_a_cnn_trains_in_channels_last_and_ships_in_the_default_layout() -> None:
    """Training switches a CNN to channels-last (faster convolutions on the CPU) only where its
    forward runs so: a model that ``view``s a feature map trains as it is."""

    class Flattens(torch.nn.Module):  # .view of a conv output: fails in channels-last
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.AvgPool2d(4))
            self.fc = torch.nn.Linear(4 * 8 * 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.fc(y.view(y.size(0), -1))

    splits = load_dataset("digits")
    tiny = build_model("entrypoint:tests.search_spaces.tiny_models:tiny_cnn", num_classes=10, in_channels=1)
    for model, fast in ((tiny, True), (Flattens(), False)):
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # C_in > 1
        layouts: list[bool] = []
        conv.register_forward_hook(lambda m, i, o, seen=layouts: seen.append(
            not o.is_contiguous()) if m.training else None)  # channels-last: not NCHW-contiguous
        before = evaluate_accuracy(model, splits.val)
        finetune(model, splits.train, steps=30, lr=0.05)
        assert evaluate_accuracy(model, splits.val) > before + 0.2
        assert set(layouts) == {fast}, layouts
        assert all(p.is_contiguous() for p in model.parameters())  # pruning and export see NCHW


def test_a_jobs_fine_tune_keeps_the_default_layout() -> None:
    """A job's recovery and finalize fine-tunes (``train_steps``) train in NCHW: channels-last
    there crashed resnet56 jobs' task processes at finalize (heap corruption); only the reference
    training, in a process of its own, uses it."""
    from search_spaces.training import train_steps

    splits = load_dataset("digits")
    model = build_model("entrypoint:tests.search_spaces.tiny_models:tiny_cnn", num_classes=10, in_channels=1)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    layouts: list[bool] = []
    conv.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous()) if m.training else None)
    batches = iter(torch.utils.data.DataLoader(splits.train, batch_size=32, shuffle=True))
    train_steps(model, batches, 5, device=torch.device("cpu"))
    assert layouts and all(layouts)
