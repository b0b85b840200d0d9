"""``autoprune space`` / ``autoprune prune`` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from service.cli import main


def test_space_lists_groups() -> None:
    res = CliRunner().invoke(main, ["space", "resnet20"])
    assert res.exit_code == 0, res.output
    assert "12 groups" in res.output and "layer1.0.conv1" in res.output
    js = CliRunner().invoke(main, ["space", "resnet1d20", "--json"])
    assert json.loads(js.output)["input_shape"] == [1, 40]
    assert json.loads(js.output)["round_to"] == "auto"
    js = CliRunner().invoke(main, ["space", "resnet1d20", "--json", "--round-to", "8"])
    assert json.loads(js.output)["round_to"] == 8
    bad = CliRunner().invoke(main, ["space", "resnet20", "--round-to", "big"])
    assert bad.exit_code == 2 and "round_to must be 'auto' or an integer" in bad.output


def test_prune_uniform_writes_a_loadable_bundle(tmp_path: Path) -> None:
    out = tmp_path / "b"
    res = CliRunner().invoke(main, ["prune", "resnet20", "--uniform", "0.5", "--rounds", "5", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert abs(data["macs_ratio"] - 0.25) < 0.02
    assert set(data["latency_ms"]) == {"dense", "pruned"} and data["latency_ratio"] > 0
    assert data["runtime"] == "onnxruntime"  # measured as the model ships, by default
    ts = torch.jit.load(str(out / "model.ts"))
    assert ts(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_prune_policy_file_and_errors(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"layer1.0.conv1": 0.5}))
    runner = CliRunner()
    res = runner.invoke(main, ["prune", "resnet20", "--policy", str(policy), "--rounds", "3", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "MACs" in res.output and "(ONNX Runtime)" in res.output
    res = runner.invoke(main, ["prune", "resnet20", "--policy", str(policy), "--rounds", "3", "--runtime", "torch",
                               "--out", str(tmp_path / "o5")])
    assert res.exit_code == 0 and "(PyTorch eager)" in res.output, res.output
    res = runner.invoke(main, ["prune", "resnet20", "--uniform", "0.5", "--runtime", "tvm", "--out", str(tmp_path / "o6")])
    assert res.exit_code == 2 and "--runtime" in res.output and "valid: torch, onnxruntime" in res.output
    policy.write_text(json.dumps({"layer1.0.conv1": 0.99}))
    res = runner.invoke(main, ["prune", "resnet20", "--policy", str(policy), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "layer1.0.conv1" in res.output and "outside" in res.output
    res = runner.invoke(main, ["prune", "resnet20", "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "exactly one of --uniform or --policy" in res.output
    res = runner.invoke(main, ["prune", "nope", "--uniform", "0.5", "--out", str(tmp_path / "o4")])
    assert res.exit_code == 2 and "valid: resnet20" in res.output


def test_depth_from_the_command_line(tmp_path: Path) -> None:
    """``--depth``: ``space`` lists the removable blocks; ``prune`` takes ``'<block>@keep': 0`` and
    writes a bundle that rebuilds without them."""
    from torch import nn

    from search_spaces.bundle import load_bundle

    res = CliRunner().invoke(main, ["space", "resnet20", "--depth"])
    assert res.exit_code == 0, res.output
    assert "removable blocks ('<block>@keep': 0 removes one): 7" in res.output and "layer3.2" in res.output
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"layer1.0.conv1": 0.5, "layer2.1@keep": 0}))
    out = tmp_path / "b"
    res = CliRunner().invoke(main, ["prune", "resnet20", "--depth", "--policy", str(policy), "--rounds", "3",
                                    "--runtime", "torch", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["removed_units"] == ["layer2.1"]
    assert json.loads((out / "architecture.json").read_text())["removed"] == ["layer2.1"]
    assert isinstance(load_bundle(out).get_submodule("layer2.1"), nn.Identity)
    res = CliRunner().invoke(main, ["prune", "resnet20", "--policy", str(policy), "--rounds", "3", "--out", str(out)])
    assert res.exit_code == 2 and "unknown removable block" in res.output  # without --depth: no units
