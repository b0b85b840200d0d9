"""The depth dimension of a space: whole residual blocks / encoder layers removed in the policy."""

from __future__ import annotations

import copy
from typing import Any

import onnxruntime as ort
import pytest
import torch
from torch import nn

from search_spaces.build import build_space
from search_spaces.bundle import export_onnx
from search_spaces.measure import count_macs_params
from search_spaces.models.mobilenetv2_cifar import MobileNetV2
from search_spaces.models.resnet_cifar import resnet20
from search_spaces.prune import apply_policy, kept_counts
from search_spaces.space import PolicyError, SearchSpace, bits_key, keep_key
from search_spaces.transformers import bundle as text_bundle
from search_spaces.transformers.model import SkippedLayer, blocks
from search_spaces.transformers.prune import (
    apply_transformer_policy,
    architecture_of,
    space_kept_counts,
)
from search_spaces.transformers.space import build_transformer_space
from tests.search_spaces.tiny_text import tiny_embedder, token_batch

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
# the blocks with an identity shortcut: all of stage 1 (16 -> 16 channels, stride 1) and all but
# the first (downsampling) block of stages 2 and 3
RESNET20_UNITS = ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return resnet20(num_classes=10).eval()


@pytest.fixture(scope="module")
def space(model: nn.Module) -> SearchSpace:
    return build_space(model, X, depth=True, precisions=("fp32", "int8"))


def test_units_are_the_blocks_with_identity_shortcuts(model: nn.Module, space: SearchSpace) -> None:
    assert [u.name for u in space.units] == RESNET20_UNITS and space.depth
    assert [u.index for u in space.units] == list(range(7))
    unit = space.unit("layer2.1")
    assert unit.kind == "block" and unit.groups == ("layer2.1.conv1",)  # conv2 feeds the stage's residual group
    block = model.get_submodule("layer2.1")
    assert unit.params == sum(p.numel() for p in block.parameters())
    assert unit.macs == 2 * 32 * 32 * 9 * 16 * 16  # two 3x3 convs, 32 -> 32 channels, on 16x16
    assert not build_space(model, X).units  # depth is asked for
    assert not build_space(model, X).depth
    # a block holding an ignored module is left whole
    ignored = build_space(model, X, depth=True, ignore=["layer1.1.conv1"])
    assert "layer1.1" not in [u.name for u in ignored.units]


def test_one_dimensional_resnets_have_the_same_units() -> None:
    from search_spaces.models.resnet1d import resnet1d20

    net = resnet1d20().eval()
    x = torch.randn(1, 1, 40)
    space = build_space(net, x, depth=True)
    assert [u.name for u in space.units] == RESNET20_UNITS
    policy = space.with_removed(space.uniform(0.3), ["layer1.0", "layer3.1"])
    assert count_macs_params(apply_policy(net, space, policy, example_input=x), x) == (
        space.macs(policy), space.params(policy))


def test_inverted_residuals_with_a_residual_connection_are_units() -> None:
    net = MobileNetV2(num_classes=10, width=0.5).eval()
    space = build_space(net, X, depth=True)
    expected = [f"features.{i}" for i, m in enumerate(net.features) if getattr(m, "use_res", False)]
    assert expected and [u.name for u in space.units] == expected
    policy = space.with_removed(space.uniform(0.3), expected[::2])
    pruned = apply_policy(net, space, policy, example_input=X)
    assert count_macs_params(pruned, X) == (space.macs(policy), space.params(policy))


def test_removals_validate_round_key_and_cost(space: SearchSpace) -> None:
    base = space.uniform(0.3)
    policy = space.with_removed(base, ["layer1.1", "layer3.2"])
    assert policy[keep_key("layer1.1")] == 0.0 and space.removed_units(policy) == ["layer1.1", "layer3.2"]
    assert space.validate(policy) == policy
    # an explicit 1 (kept) is the same policy as none
    assert space.validate({**base, keep_key("layer2.1"): 1}) == space.validate(base)
    # signatures: unchanged without removals, "|drop:<unit indices>" with them, the removed
    # blocks' groups read as dense
    inside = {"layer1.1.conv1": 0.0, "layer3.2.conv1": 0.0}
    assert space.signature(policy) == space.signature({**base, **inside}) + "|drop:1,6"
    # a removed block's groups' widths and precisions no longer matter
    other = {**policy, "layer1.1.conv1": 0.6, bits_key("layer1.1.conv1"): 8.0}
    assert space.signature(other) == space.signature(policy)
    assert space.round(other) == space.round(policy)
    assert space.int8_groups(other) == [] and space.int8_layers(other) == []  # its layers are gone
    assert space.round(policy)["layer1.1.conv1"] == 0.0 and space.removed_units(space.round(policy)) == [
        "layer1.1", "layer3.2"]
    # int8 of a kept group survives; widths() keeps the architecture (removals) and drops bits
    mixed = space.with_int8(policy, ["conv1"])
    assert space.signature(mixed) == space.signature({**base, **inside}) + "|int8:0|drop:1,6"
    assert space.widths(mixed) == policy
    # the stage's residual group (rooted at conv1) also runs through the removed block's conv2:
    # its int8 layers are those still in the model (what the quantizer must find in the file)
    assert "layer1.1.conv2" in space.group("conv1").weights
    assert space.int8_layers(mixed) == [w for w in space.group("conv1").weights if not w.startswith("layer1.1.")]
    # costs: the removed blocks' layers cost nothing
    gone = space.unit("layer1.1"), space.unit("layer3.2")
    dense_units = space.with_removed(space.uniform(0.0), ["layer1.1", "layer3.2"])
    assert space.macs(dense_units) == space.dense_macs - sum(u.macs for u in gone)
    assert space.params(dense_units) == space.dense_params - sum(u.params for u in gone)
    assert space.macs(policy) < space.macs(base)


def test_bad_keep_entries_name_the_unit(space: SearchSpace) -> None:
    with pytest.raises(PolicyError, match="'layer2.0'.*unknown removable"):  # downsamples: not a unit
        space.validate({keep_key("layer2.0"): 0})
    with pytest.raises(PolicyError, match="'layer1.1'.*keep must be 1 \\(kept\\) or 0 \\(removed\\), got 0.5"):
        space.validate({keep_key("layer1.1"): 0.5})
    with pytest.raises(PolicyError, match="'layer1.1'.*got True"):
        space.validate({keep_key("layer1.1"): True})
    with pytest.raises(PolicyError, match="'nope'"):
        space.with_removed(space.uniform(0.0), ["nope"])
    widths_only = SearchSpace.from_dict({**space.to_dict(), "units": []})
    with pytest.raises(PolicyError, match="'layer1.1'.*unknown removable"):
        widths_only.validate({keep_key("layer1.1"): 0})


def test_the_space_round_trips_with_its_units(space: SearchSpace) -> None:
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space and again.units == space.units
    old = {k: v for k, v in space.to_dict().items() if k != "units"}  # a space stored before
    assert not SearchSpace.from_dict(old).depth


def test_apply_policy_removes_exactly_those_blocks(model: nn.Module, space: SearchSpace) -> None:
    policy = space.with_removed(space.uniform(0.3), ["layer1.1", "layer2.2", "layer3.1"])
    kept_out: dict[str, list[int]] = {}
    pruned = apply_policy(model, space, policy, example_input=X, kept_out=kept_out)
    identities = {n for n, m in pruned.named_modules() if isinstance(m, nn.Identity) and not n.endswith("shortcut")}
    assert identities == {"layer1.1", "layer2.2", "layer3.1"}
    assert count_macs_params(pruned, X) == (space.macs(policy), space.params(policy))
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    live = {n: k for n, k in space.kept(policy).items() if n not in space.removed_groups(policy)}
    assert kept_counts(pruned, space) == live
    assert not any(n.startswith(("layer1.1.", "layer2.2.", "layer3.1.")) for n in kept_out)
    assert count_macs_params(model, X)[0] == space.dense_macs  # the dense model untouched
    # removing a block = its residual branch gone: the block's output is its (post-ReLU) input
    dense: Any = resnet20(num_classes=10).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        h = dense.layer1[0](torch.relu(dense.bn1(dense.conv1(X))))
        for m in dense.layer1[1].modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.weight), nn.init.zeros_(m.bias)
        assert torch.equal(dense.layer1[1](h), h)


def test_the_shallower_cnn_exports_to_onnx(model: nn.Module, space: SearchSpace, tmp_path) -> None:  # type: ignore[no-untyped-def]
    policy = space.with_removed(space.uniform(0.5), [u.name for u in space.units])
    pruned = apply_policy(model, space, policy, example_input=X)
    assert count_macs_params(pruned, X) == (space.macs(policy), space.params(policy))
    path = tmp_path / "model.onnx"
    export_onnx(pruned, X, path)
    x = torch.randn(2, 3, 32, 32)
    out = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), pruned(x), atol=1e-4)


SEQ = 32


def test_a_transformer_with_one_of_two_layers_removed_runs_and_exports(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_embedder()
    x = token_batch(1, SEQ)
    space = build_transformer_space(model, x, criterion="l2", depth=True)
    assert [(u.name, u.kind) for u in space.units] == [
        ("backbone.encoder.layer.0", "layer"), ("backbone.encoder.layer.1", "layer")]
    assert space.unit("backbone.encoder.layer.1").groups == (
        "backbone.encoder.layer.1.attention.self", "backbone.encoder.layer.1.intermediate.dense")
    assert not build_transformer_space(model, x, criterion="l2").units
    policy = space.with_removed(space.uniform(0.25), ["backbone.encoder.layer.1"])
    assert space.signature(policy) == space.signature(space.uniform(0.25)).rsplit("-", 2)[0] + "-4-128|drop:1"
    pruned = apply_transformer_policy(model, space, policy, criterion="l2")
    assert isinstance(pruned.backbone.encoder.layer[1], SkippedLayer)
    assert [b.index for b in blocks(pruned)] == [0] and blocks(pruned)[0].attention.num_attention_heads == 3
    assert space_kept_counts(pruned, space) == {
        "backbone.encoder.layer.0.attention.self": 3, "backbone.encoder.layer.0.intermediate.dense": 96}
    assert count_macs_params(pruned, x) == (space.macs(policy), space.params(policy))
    batch = token_batch(3, SEQ)
    out = pruned(batch)
    assert out.shape == (3, 32)
    # the skipped layer passes the hidden states on: the same as the first layer's output alone
    with torch.no_grad():
        tokens, _ = pruned.token_embeddings(batch)
        del pruned.backbone.encoder.layer[1]
        alone, _ = pruned.token_embeddings(batch)
    assert torch.equal(tokens, alone)
    pruned = apply_transformer_policy(model, space, policy, criterion="l2")
    path = tmp_path / "model.onnx"
    text_bundle.export_onnx(pruned, x, path)
    onnx_out = ort.InferenceSession(str(path)).run(None, {"input_ids": batch.numpy()})[0]
    assert torch.allclose(torch.from_numpy(onnx_out), out.detach(), atol=1e-5)
    # architecture.json names the removed layer; the rebuild loads the weights strictly
    arch = text_bundle.describe(pruned)
    assert arch["sizes"]["removed"] == [1] and arch["sizes"]["heads"] == [3]
    again = text_bundle.rebuild(arch)
    again.load_state_dict(pruned.state_dict(), strict=True)
    assert architecture_of(again) == architecture_of(pruned)
    assert "removed" not in architecture_of(model)  # unchanged for a model with every layer
    # a depth job's bundle names its kept layers too (workers' text finalizer): checked on load
    text_bundle.rebuild({**arch, "kept_layers": space.kept_units(policy)})
    with pytest.raises(ValueError, match="both kept and removed"):
        text_bundle.rebuild({**arch, "kept_layers": [u.name for u in space.units]})


def test_layers_removed_beside_a_pruned_hidden_width() -> None:
    model = tiny_embedder()
    x = token_batch(1, SEQ)
    space = build_transformer_space(model, x, criterion="l2", depth=True, hidden=True)
    assert all("backbone.embeddings" not in u.groups for u in space.units)
    policy = space.with_removed({**space.uniform(0.25), "backbone.embeddings": 0.5}, ["backbone.encoder.layer.0"])
    pruned = apply_transformer_policy(model, space, policy, criterion="l2")
    assert [b.index for b in blocks(pruned)] == [1]
    assert count_macs_params(pruned, x) == (space.macs(policy), space.params(policy))
    assert pruned(token_batch(2, SEQ)).shape == (2, 16)
    # every layer removed: the embeddings pass straight to the pooling
    both = space.with_removed(space.uniform(0.0), [u.name for u in space.units])
    empty = apply_transformer_policy(model, space, both, criterion="l2")
    assert not blocks(empty) and space.macs(both) == 0
    assert count_macs_params(empty, x) == (0, space.params(both))


def test_the_zoo_says_which_cnns_have_no_depth_to_search() -> None:
    """``zoo.WITHOUT_DEPTH`` (a submit-time 422 reads it) agrees with the removal rules."""
    from search_spaces.depth import removable_blocks
    from search_spaces.zoo import DEFAULT_INPUT_SHAPES, WITHOUT_DEPTH, build_model

    for name, shape in DEFAULT_INPUT_SHAPES.items():
        net = build_model(name, num_classes=10, in_channels=shape[0]).eval()
        assert (not removable_blocks(net, torch.randn(1, *shape))) == (name in WITHOUT_DEPTH), name


def test_a_bundle_rebuilds_the_shallower_cnn(model: nn.Module, space: SearchSpace, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``architecture.json`` lists the removed blocks and the kept ones; ``load_bundle`` rebuilds
    the removed ones as identities and loads the weights strictly."""
    import json

    from search_spaces.bundle import architecture, load_bundle, save_bundle

    gone = ["layer1.1", "layer3.2"]
    policy = space.with_removed(space.uniform(0.4), gone)
    pruned = apply_policy(model, space, policy, example_input=X)
    kept = {n: k for n, k in space.kept(policy).items() if n not in space.removed_groups(policy)}
    arch = architecture("resnet20", num_classes=10, in_channels=3, input_shape=(3, 32, 32), kept=kept,
                        removed=space.removed_units(policy), kept_layers=space.kept_units(policy))
    save_bundle(tmp_path, pruned, arch=arch, onnx=False, torchscript=False)
    saved = json.loads((tmp_path / "architecture.json").read_text())
    assert saved["removed"] == gone and saved["kept_layers"] == [u for u in RESNET20_UNITS if u not in gone]
    rebuilt = load_bundle(tmp_path)
    assert all(isinstance(rebuilt.get_submodule(n), nn.Identity) for n in gone)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned.eval()(x))
    # without depth the description is as it always was
    plain = architecture("resnet20", num_classes=10, in_channels=3, input_shape=(3, 32, 32), kept=kept)
    assert "removed" not in plain and "kept_layers" not in plain
    (tmp_path / "architecture.json").write_text(json.dumps({**saved, "kept_layers": ["layer1.1"]}))
    with pytest.raises(ValueError, match="both removed and kept"):
        load_bundle(tmp_path)


def test_widths_of_a_model_whose_blocks_are_already_removed() -> None:
    """AGP re-prunes a model whose removed blocks are gone: a group rooted in one of them (a
    MobileNetV2 residual chain) is found from a layer still there, with the same result."""
    from search_spaces.depth import remove_blocks
    from search_spaces.prune import live_kept, prune_to_counts

    net = MobileNetV2(num_classes=10, width=0.5).eval()
    space = build_space(net, X, depth=True)
    chained = next(u.name for u in space.units
                   if any(g.name.startswith(f"{u.name}.") and g.name not in u.groups for g in space.groups))
    policy = space.with_removed(space.uniform(0.4), [chained])
    kept = live_kept(space, policy)
    assert not any(k.startswith(f"{chained}.") for k in kept)
    shallow = prune_to_counts(remove_blocks(copy.deepcopy(net), [chained]), kept, X)
    assert count_macs_params(shallow, X) == (space.macs(policy), space.params(policy))
