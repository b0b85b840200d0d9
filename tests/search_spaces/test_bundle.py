"""The bundle round-trips without pickle; TorchScript and ONNX equal the pruned model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from search_spaces import apply_policy, build_model, build_space, load_bundle, save_bundle
from search_spaces.bundle import architecture
from tests.search_spaces.conftest import example

CASES = [
    ("resnet20", (3, 32, 32), 10),
    ("entrypoint:tests.search_spaces.tiny_models:concat_net", (3, 16, 16), 5),
]


@pytest.mark.parametrize(("source", "shape", "classes"), CASES)
def test_bundle_round_trip(tmp_path: Path, source: str, shape: tuple[int, ...], classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(source, num_classes=classes, in_channels=shape[0]).eval()
    x = torch.randn(1, *shape)
    space = build_space(model, x, round_to=4)
    policy = {g.name: 0.1 + 0.6 * ((i * 7) % 5) / 4 for i, g in enumerate(space.groups)}
    pruned = apply_policy(model, space, policy, example_input=x).eval()
    arch = architecture(source, num_classes=classes, in_channels=shape[0], input_shape=shape, kept=space.kept(policy))
    files = save_bundle(tmp_path, pruned, arch=arch, policy=space.validate(policy), metrics={"quality": 0.5}, onnx=source == "resnet20")
    assert {"model.safetensors", "architecture.json", "policy.json", "model.ts", "metrics.json"} <= set(files)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"quality": 0.5}

    batch = torch.randn(3, *shape)
    with torch.no_grad():
        want = pruned(batch)
        reloaded = load_bundle(tmp_path, trusted=source.startswith("entrypoint:"))
        assert (reloaded(batch) - want).abs().max() <= 1e-5
        scripted = torch.jit.load(str(tmp_path / "model.ts"))
        assert (scripted(batch) - want).abs().max() <= 1e-5
    # no pickle: the weights file is safetensors, the architecture plain JSON
    assert (tmp_path / "model.safetensors").read_bytes()[8:9] == b"{"
    assert json.loads((tmp_path / "architecture.json").read_text())["kept"] == space.kept(policy)
    if source == "resnet20":  # the exported graph is a valid ONNX model
        import onnx

        onnx.checker.check_model(onnx.load(str(tmp_path / "model.onnx")))


def test_onnx_output_equals(tmp_path: Path) -> None:
    import onnxruntime  # a test dependency: the round trip always runs

    model = build_model("resnet20", num_classes=10, in_channels=3).eval()
    x = example("resnet20")
    space = build_space(model, x)
    pruned = apply_policy(model, space, space.uniform(0.5), example_input=x).eval()
    arch = architecture("resnet20", num_classes=10, in_channels=3, input_shape=(3, 32, 32), kept=space.kept(space.uniform(0.5)))
    assert save_bundle(tmp_path, pruned, arch=arch)["model.onnx"] == "onnx"
    sess = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    got = sess.run(None, {"input": x.numpy()})[0]
    assert abs(got - pruned(x).detach().numpy()).max() <= 1e-4


def test_bundle_naming_foreign_code_is_not_imported(tmp_path: Path) -> None:
    """A bundle is data: an ``entrypoint:`` source that is not a registered or allowed plugin is
    refused before anything is imported (unless the caller vouches for the bundle)."""
    import sys

    (tmp_path / "architecture.json").write_text(json.dumps(architecture(
        "entrypoint:tests.search_spaces.never_imported:build", num_classes=2, in_channels=3,
        input_shape=(3, 8, 8), kept={})))
    with pytest.raises(ValueError, match="not a registered model plugin.*trusted=True"):
        load_bundle(tmp_path)
    assert "tests.search_spaces.never_imported" not in sys.modules


def test_bad_architecture_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "architecture.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="architecture.format"):
        load_bundle(tmp_path)
    with pytest.raises(ValueError, match="no architecture.json"):
        load_bundle(tmp_path / "missing")
