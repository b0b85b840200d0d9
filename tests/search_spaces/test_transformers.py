"""Transformer search spaces: whole-head surgery, MLP widths, exact analytic cost, bundles."""

from __future__ import annotations

import random

import pytest
import torch

from search_spaces.graph import SpaceError
from search_spaces.measure import count_macs_params
from search_spaces.space import PolicyError
from search_spaces.transformers.model import HIDDEN_GROUP, blocks
from search_spaces.transformers.prune import apply_transformer_policy, space_kept_counts
from search_spaces.transformers.space import build_transformer_space
from tests.search_spaces.tiny_text import minilm_dir, tiny_embedder, token_batch

SEQ = 32


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    model = tiny_embedder()
    x = token_batch(1, SEQ)
    calibration = [token_batch(8, SEQ, seed=s) for s in (1, 2)]
    return model, x, calibration


def test_groups_are_heads_and_mlp_widths_per_layer(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, cal = tiny
    space = build_transformer_space(model, x, criterion="activation", calibration=cal)
    assert [(g.kind, g.channels) for g in space.groups] == [("heads", 4), ("mlp", 128)] * 2
    heads = space.groups[0]
    # heads counted one by one (not rounded to round_to=8), MLP widths in steps of 8
    assert space.levels(heads) == [1, 2, 3, 4]
    assert space.levels(space.groups[1])[:3] == [32, 40, 48]
    assert space.input_shape == (SEQ,)


def test_random_policies_prune_run_and_match_counted_macs(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, cal = tiny
    space = build_transformer_space(model, x, criterion="activation", calibration=cal)
    macs, params = count_macs_params(model, x)
    assert space.dense_macs == macs and space.dense_params == params
    rng = random.Random(0)
    batch = token_batch(3, SEQ)
    for _ in range(4):
        policy = {g.name: rng.uniform(0, space.max_ratio) for g in space.groups}
        pruned = apply_transformer_policy(model, space, policy, criterion="activation", calibration=cal)
        assert space_kept_counts(pruned, space) == space.kept(policy)
        for b, kept_heads in zip(blocks(pruned), list(space.kept(policy).values())[::2], strict=True):
            assert b.attention.num_attention_heads == kept_heads
            assert b.attention.all_head_size == kept_heads * b.attention.attention_head_size
        out = pruned(batch)
        assert out.shape == (3, 32)
        assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
        m, p = count_macs_params(pruned, x)
        assert space.macs(policy) == pytest.approx(m, rel=0.01)
        assert space.params(policy) == pytest.approx(p, rel=1e-9)
    assert count_macs_params(model, x) == (macs, params)  # the dense model is untouched


def test_attention_products_are_counted(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = tiny
    macs, _ = count_macs_params(model, x)
    linear_only = sum(
        SEQ * m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    # two products per layer: q·kᵀ and attention·v, each seq² · heads · head_size
    assert macs - linear_only == 2 * (2 * SEQ * SEQ * 32)


def test_heads_are_removed_whole_by_importance(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = tiny
    space = build_transformer_space(model, x, criterion="l2")
    name = space.groups[0].name
    policy = {name: 0.5}
    pruned = apply_transformer_policy(model, space, policy, criterion="l2")
    dense_q = blocks(model)[0].query.weight.detach().reshape(4, 8, 32)
    dense_o = blocks(model)[0].attn_out.weight.detach()
    score = (
        sum(
            getattr(blocks(model)[0], n).weight.detach().pow(2).reshape(4, 8, 32).sum((1, 2))
            + getattr(blocks(model)[0], n).bias.detach().pow(2).reshape(4, 8).sum(1)
            for n in ("query", "key", "value")
        )
        + dense_o.pow(2).reshape(32, 4, 8).sum((0, 2))
    )
    keep = sorted(torch.argsort(score, descending=True)[:2].tolist())
    got = blocks(pruned)[0].query.weight.detach().reshape(2, 8, 32)
    assert torch.equal(got, dense_q[keep])
    assert torch.equal(
        blocks(pruned)[0].attn_out.weight.detach(), dense_o.reshape(32, 4, 8)[:, keep].reshape(32, 16)
    )


def test_hidden_width_is_one_optional_group(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, cal = tiny
    assert HIDDEN_GROUP not in build_transformer_space(model, x, criterion="l1").names
    space = build_transformer_space(model, x, criterion="activation", calibration=cal, hidden=True)
    assert space.group(HIDDEN_GROUP).kind == "hidden"
    policy = {HIDDEN_GROUP: 0.5, space.groups[0].name: 0.25}
    pruned = apply_transformer_policy(model, space, policy, criterion="activation", calibration=cal)
    assert pruned(token_batch(2, SEQ)).shape == (2, 16)
    m, p = count_macs_params(pruned, x)
    assert space.macs(policy) == pytest.approx(m, rel=0.01)
    assert space.params(policy) == pytest.approx(p, rel=1e-9)


def test_bad_inputs_name_the_problem(tiny) -> None:  # type: ignore[no-untyped-def]
    model, x, _ = tiny
    with pytest.raises(SpaceError, match="criterion 'taylor'"):
        build_transformer_space(model, x, criterion="taylor")
    with pytest.raises(ValueError, match="calibration text"):
        build_transformer_space(model, x, criterion="activation")
    with pytest.raises(SpaceError, match="token ids"):
        build_transformer_space(model, x.float(), criterion="l1")
    space = build_transformer_space(model, x, criterion="l1")
    with pytest.raises(PolicyError, match="outside"):
        apply_transformer_policy(model, space, {space.groups[0].name: 0.95}, criterion="l1")


def test_bundle_rebuilds_without_pickle_and_onnx_has_dynamic_axes(tiny, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from search_spaces.bundle import load_bundle
    from search_spaces.transformers.bundle import onnx_max_diff, save_sentence_embedder

    model, x, cal = tiny
    space = build_transformer_space(model, x, criterion="activation", calibration=cal)
    policy = {g.name: r for g, r in zip(space.groups, (0.5, 0.7, 0.25, 0.3), strict=True)}
    pruned = apply_transformer_policy(model, space, policy, criterion="activation", calibration=cal)
    files = save_sentence_embedder(tmp_path, pruned, example=x)
    assert {"model.safetensors", "architecture.json", "model.onnx"} <= set(files)
    rebuilt = load_bundle(tmp_path)  # the generic loader dispatches on architecture.json's kind
    ids = token_batch(4, 19)
    assert torch.allclose(rebuilt(ids), pruned(ids), atol=1e-6)
    # other batch and sequence sizes than the export's (1, 32)
    assert onnx_max_diff(tmp_path / "model.onnx", pruned, [ids, token_batch(2, 45)]) < 1e-5


@pytest.mark.slow
def test_all_minilm_from_the_wheel_matches_sentence_transformers_and_prunes_exactly() -> None:
    from sentence_transformers import SentenceTransformer

    from search_spaces.zoo import build_model

    model = build_model("all-minilm-l6-v2")
    sentences = ["Return the absolute value of a number.", "A cat sat on the mat by the door."]
    ids = model.tokenizer()(sentences, padding=True, return_tensors="pt")["input_ids"]
    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(sentences, convert_to_tensor=True)
    with torch.no_grad():
        assert torch.allclose(model(ids), reference, atol=1e-5)
    x = model.tokenizer()(" ".join(sentences * 20), truncation=True, max_length=128, return_tensors="pt")["input_ids"]
    space = build_transformer_space(model, x, criterion="l2")
    assert [g.channels for g in space.groups] == [12, 1536] * 6
    policy = {g.name: 0.5 for g in space.groups}
    pruned = apply_transformer_policy(model, space, policy, criterion="l2")
    m, _ = count_macs_params(pruned, x)
    assert m == pytest.approx(space.macs(policy), rel=0.01)
    assert space.macs_ratio(policy) == pytest.approx(0.5, abs=0.01)
