"""Channel importance and surgery for sentence embedders: whole heads, MLP widths, hidden width.

Surgery uses Torch-Pruning's pruning functions on the exact indices chosen here: a head's
``head_size`` rows of q, k and v and columns of the attention output go together, and the
layer's ``num_attention_heads`` / ``all_head_size`` are updated so the model's own forward runs.
(Torch-Pruning's ``MetaPruner`` would also remove heads, but only at one global ratio and only
when the group's ratio is above 0; autoprune chooses a count per layer.)

Criteria: ``l1`` / ``l2`` (weight magnitude over every weight a channel owns), ``random``
(seeded by group name) and ``activation``: channel RMS activation on calibration text (real
tokens only) × the L2 norm of the weights that read the channel — for a head, summed over its
channels of the context vector feeding the attention output projection; for the MLP, the
post-GELU width feeding fc2.
"""

from __future__ import annotations

import copy
import weakref
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.space import PolicyError, SearchSpace
from search_spaces.transformers.model import (
    HIDDEN_GROUP,
    Block,
    SentenceEmbedder,
    blocks,
    layer_prefix,
    remove_layers,
    removed_layers,
)

Scores = dict[str, torch.Tensor]

# dense model -> {(criterion, hidden, architecture): scores}; the evaluator prunes copies of one
# dense model thousands of times and the scores depend on it (and the fixed calibration) only
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], Scores]] = weakref.WeakKeyDictionary()


def _inputs(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, list | tuple) else batch


def architecture_of(model: SentenceEmbedder) -> dict[str, Any]:
    """Per kept layer: heads, head size, MLP width; the hidden width; and, when layers were
    removed, their indices (``removed``)."""
    bl = blocks(model)
    out: dict[str, Any] = {
        "hidden": int(model.backbone.embeddings.word_embeddings.embedding_dim),
        "heads": [int(b.attention.num_attention_heads) for b in bl],
        "head_size": [int(b.attention.attention_head_size) for b in bl],
        "intermediate": [int(b.fc1.out_features) for b in bl],
    }
    gone = removed_layers(model)
    if gone:
        out["removed"] = gone
    return out


def _head_channels(b: Block, heads: Sequence[int]) -> list[int]:
    hd = int(b.attention.attention_head_size)
    return [h * hd + j for h in heads for j in range(hd)]


def _magnitude(model: SentenceEmbedder, p: int, hidden: bool) -> Scores:
    def mag(w: torch.Tensor, dim: int) -> torch.Tensor:
        return w.detach().abs().pow(p).sum(dim=dim)

    out: Scores = {}
    for b in blocks(model):
        n, hd = b.attention.num_attention_heads, b.attention.attention_head_size
        # every weight a channel of the context owns: its q, k, v rows (+ biases), its o column
        per_channel = mag(b.attn_out.weight, 0)
        for lin in (b.query, b.key, b.value):
            per_channel = per_channel + mag(lin.weight, 1) + lin.bias.detach().abs().pow(p)
        out[b.heads_group] = per_channel.reshape(n, hd).sum(1)
        out[b.mlp_group] = mag(b.fc1.weight, 1) + b.fc1.bias.detach().abs().pow(p) + mag(b.fc2.weight, 0)
    if hidden:
        out[HIDDEN_GROUP] = _hidden_magnitude(model, p)
    return out


def _hidden_magnitude(model: SentenceEmbedder, p: int) -> torch.Tensor:
    emb = model.backbone.embeddings
    total = sum(e.weight.detach().abs().pow(p).sum(0) for e in
                (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings))
    for b in blocks(model):
        for m in (b.query, b.key, b.value, b.fc1):
            total = total + m.weight.detach().abs().pow(p).sum(0)
        for m in (b.attn_out, b.fc2):
            total = total + m.weight.detach().abs().pow(p).sum(1)
    return total


@torch.no_grad()
def _activation(model: SentenceEmbedder, calibration: Sequence[Any], hidden: bool) -> Scores:
    if not calibration:
        raise ValueError(
            "criterion 'activation' needs calibration text: set evaluation.calibration_batches >= 1"
        )
    bl = blocks(model)
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros(())
    mask_box: list[torch.Tensor] = []
    handles = []

    def pre(name: str):  # type: ignore[no-untyped-def]
        def fn(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            m = mask_box[0].to(x.dtype).unsqueeze(-1)
            sums[name] = sums.get(name, 0) + (x.pow(2) * m).sum((0, 1))

        return fn

    def post(name: str):  # type: ignore[no-untyped-def]
        def fn(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            pre(name)(module, (out,))

        return fn

    for b in bl:
        handles.append(b.attn_out.register_forward_pre_hook(pre(b.heads_group)))
        handles.append(b.fc2.register_forward_pre_hook(pre(b.mlp_group)))
        if hidden:
            handles.append(b.out_norm.register_forward_hook(post(f"{HIDDEN_GROUP}#{b.index}")))
    if hidden:
        handles.append(model.backbone.embeddings.register_forward_hook(post(f"{HIDDEN_GROUP}#emb")))
    was = model.training
    model.eval()
    try:
        for batch in calibration:
            ids = _inputs(batch)
            mask = ids != model.pad_token_id
            length = int(mask.sum(1).max())  # dynamic padding: drop all-pad columns
            ids, mask = ids[:, :length], mask[:, :length]
            mask_box[:] = [mask]
            count = count + mask.sum()
            model(ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    rms = {k: (v / count.clamp(min=1)).sqrt() for k, v in sums.items()}
    out: Scores = {}
    for b in bl:
        n, hd = b.attention.num_attention_heads, b.attention.attention_head_size
        w_norm = b.attn_out.weight.detach().norm(dim=0)
        out[b.heads_group] = (rms[b.heads_group] * w_norm).reshape(n, hd).sum(1)
        out[b.mlp_group] = rms[b.mlp_group] * b.fc2.weight.detach().norm(dim=0)
    if hidden:
        stream = sum(v for k, v in rms.items() if k.startswith(f"{HIDDEN_GROUP}#"))
        out[HIDDEN_GROUP] = stream * _hidden_magnitude(model, 2).sqrt()
    return out


def _random(model: SentenceEmbedder, hidden: bool) -> Scores:
    def r(name: str, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        return torch.rand(n, generator=gen)

    out: Scores = {}
    for b in blocks(model):
        out[b.heads_group] = r(b.heads_group, b.attention.num_attention_heads)
        out[b.mlp_group] = r(b.mlp_group, b.fc1.out_features)
    if hidden:
        out[HIDDEN_GROUP] = r(HIDDEN_GROUP, model.backbone.embeddings.word_embeddings.embedding_dim)
    return out


def group_importance(
    model: SentenceEmbedder, criterion: str, calibration: Sequence[Any] = (), *, hidden: bool = False
) -> Scores:
    """Scores per group (one per head / MLP channel / hidden channel), higher = keep."""
    if criterion in ("l1", "l2"):
        return _magnitude(model, 1 if criterion == "l1" else 2, hidden)
    if criterion == "activation":
        return _activation(model, calibration, hidden)
    if criterion == "random":
        return _random(model, hidden)
    raise ValueError(
        f"criterion {criterion!r} is not supported for transformer models; "
        "use l1, l2, activation or random"
    )


def cached_importance(
    model: SentenceEmbedder, criterion: str, calibration: Sequence[Any] = (), *, hidden: bool = False
) -> Scores:
    """``group_importance`` of a model that is not changed afterwards (the dense model)."""
    key = (criterion, hidden, repr(architecture_of(model)), len(calibration))
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = group_importance(model, criterion, calibration, hidden=hidden)
    return per_model[key]


def _drop(scores: torch.Tensor, n: int, k: int, name: str) -> list[int]:
    if not 1 <= k <= n:
        raise PolicyError(name, f"kept channels {k} outside [1, {n}]")
    return sorted(torch.argsort(scores, stable=True)[: n - k].tolist())


def prune_transformer_to_counts(
    model: SentenceEmbedder,
    kept: Mapping[str, int],
    *,
    criterion: str = "activation",
    calibration: Sequence[Any] = (),
    scores: Scores | None = None,
) -> SentenceEmbedder:
    """Prunes ``model`` IN PLACE so each named group keeps ``kept[name]`` heads / channels."""
    bl = blocks(model)
    known = {b.heads_group for b in bl} | {b.mlp_group for b in bl} | {HIDDEN_GROUP}
    for name in kept:
        if name not in known:
            raise PolicyError(name, "unknown transformer group")
    if scores is None:
        scores = group_importance(model, criterion, calibration, hidden=HIDDEN_GROUP in kept)
    for b in bl:
        if b.heads_group in kept:
            n = int(b.attention.num_attention_heads)
            drop = _drop(scores[b.heads_group], n, int(kept[b.heads_group]), b.heads_group)
            if drop:
                idxs = _head_channels(b, drop)
                for lin in (b.query, b.key, b.value):
                    tp.prune_linear_out_channels(lin, idxs)
                tp.prune_linear_in_channels(b.attn_out, idxs)
                b.attention.num_attention_heads = n - len(drop)
                b.attention.all_head_size = b.query.out_features
        if b.mlp_group in kept:
            drop = _drop(scores[b.mlp_group], b.fc1.out_features, int(kept[b.mlp_group]), b.mlp_group)
            if drop:
                tp.prune_linear_out_channels(b.fc1, drop)
                tp.prune_linear_in_channels(b.fc2, drop)
    if HIDDEN_GROUP in kept:
        emb = model.backbone.embeddings
        n = emb.word_embeddings.embedding_dim
        drop = _drop(scores[HIDDEN_GROUP], n, int(kept[HIDDEN_GROUP]), HIDDEN_GROUP)
        if drop:
            for e in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
                tp.prune_embedding_out_channels(e, drop)
            tp.prune_layernorm_out_channels(emb.LayerNorm, drop)
            for b in bl:
                for lin in (b.query, b.key, b.value, b.fc1):
                    tp.prune_linear_in_channels(lin, drop)
                for lin in (b.attn_out, b.fc2):
                    tp.prune_linear_out_channels(lin, drop)
                tp.prune_layernorm_out_channels(b.attn_norm, drop)
                tp.prune_layernorm_out_channels(b.out_norm, drop)
    model.zero_grad(set_to_none=True)
    return model


def apply_transformer_policy(
    model: SentenceEmbedder,
    space: SearchSpace,
    policy: Mapping[str, float],
    *,
    criterion: str = "activation",
    calibration: Sequence[Any] = (),
) -> SentenceEmbedder:
    """A physically pruned deep copy of ``model`` (left untouched), its groups at
    ``space.kept(policy)`` and the layers the policy removes skipped (``SkippedLayer``);
    importance is computed once per dense model and criterion."""
    policy = space.validate(policy)
    gone = space.removed_groups(policy)
    kept = {n: k for n, k in space.kept(policy).items() if n not in gone}
    hidden = any(g.kind == "hidden" for g in space.groups)
    scores = cached_importance(model, criterion, list(calibration), hidden=hidden)
    pruned = prune_transformer_to_counts(copy.deepcopy(model), kept, scores=scores)
    index = {layer_prefix(b.index): b.index for b in blocks(model)}
    return remove_layers(pruned, [index[u] for u in space.removed_units(policy)])  # type: ignore[return-value]


def space_kept_counts(model: SentenceEmbedder, space: SearchSpace) -> dict[str, int]:
    """The groups' actual sizes, to compare with ``space.kept(policy)`` (the groups of removed
    layers left out)."""
    counts = kept_counts(model)
    return {g.name: counts[g.name] for g in space.groups if g.name in counts}


def kept_counts(model: SentenceEmbedder) -> dict[str, int]:
    """Heads / MLP channels / hidden width the model actually has, by group name."""
    out: dict[str, int] = {}
    for b in blocks(model):
        out[b.heads_group] = int(b.attention.num_attention_heads)
        out[b.mlp_group] = int(b.fc1.out_features)
    out[HIDDEN_GROUP] = int(model.backbone.embeddings.word_embeddings.embedding_dim)
    return out


def activation_criterion() -> Any:
    """The ``activation`` registry entry: transformer spaces only (CNN groups cannot use it)."""

    def refuse(group: Any) -> torch.Tensor:
        raise ValueError(
            "search_space.criterion 'activation' is implemented for transformer models only"
        )

    return refuse
