"""The search space of a sentence embedder: per layer, its attention heads and MLP width.

Group kinds: ``heads`` (channels = heads; q, k, v and the attention output projection coupled,
one head removed whole), ``mlp`` (the intermediate width: fc1 outputs and fc2 inputs) and,
when asked for, one ``hidden`` group (the residual width through every layer, embeddings
included). MACs are per example at the example input's sequence length and include the two
attention products (q·kᵀ and attention·v, ``2·seq²·heads·head_size``), which Torch-Pruning's op
counter leaves out; ``search_spaces.measure.count_macs_params`` counts the same, so analytic and
counted MACs agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.depth import units_of
from search_spaces.space import Group, LayerCost, RoundTo, SearchSpace
from search_spaces.transformers.model import HIDDEN_GROUP, SentenceEmbedder, blocks, is_transformer

#: criteria a transformer space can rank channels by
CRITERIA = ("l1", "l2", "activation", "random")


def _n(*ps: Any) -> int:
    return sum(int(p.numel()) for p in ps if p is not None)


def _costs(model: SentenceEmbedder, seq: int, hidden_group: bool) -> list[LayerCost]:
    """Dense MACs / params of every piece, each scaled by the groups that shrink it."""
    hid: tuple[str, ...] = (HIDDEN_GROUP,) if hidden_group else ()
    emb = model.backbone.embeddings
    costs = [LayerCost("backbone.embeddings", 0, _n(*emb.parameters()), hid)]
    for b in blocks(model):
        heads, mlp = b.heads_group, b.mlp_group
        hs, h = b.attention.all_head_size, b.query.in_features
        inter = b.fc1.out_features
        costs += [
            LayerCost(f"{heads}.qkv", 3 * seq * h * hs, 3 * h * hs, (heads, *hid)),
            LayerCost(f"{heads}.qkv#bias", 0, _n(b.query.bias, b.key.bias, b.value.bias), (heads,)),
            LayerCost(f"{heads}.products", 2 * seq * seq * hs, 0, (heads,)),
            LayerCost(f"{b.prefix}.attention.output.dense", seq * hs * h, hs * h, (heads, *hid)),
            LayerCost(
                f"{b.prefix}.attention.output#vec",
                0,
                _n(b.attn_out.bias, *b.attn_norm.parameters()),
                hid,
            ),
            LayerCost(mlp, seq * h * inter, h * inter, (mlp, *hid)),
            LayerCost(f"{mlp}#bias", 0, _n(b.fc1.bias), (mlp,)),
            LayerCost(f"{b.prefix}.output.dense", seq * inter * h, inter * h, (mlp, *hid)),
            LayerCost(f"{b.prefix}.output#vec", 0, _n(b.fc2.bias, *b.out_norm.parameters()), hid),
        ]
    counted = sum(c.params for c in costs)
    left = _n(*model.parameters()) - counted
    if left:
        costs.append(LayerCost("<other>", 0, left, ()))
    return costs


def build_transformer_space(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    max_ratio: float = 0.8,
    round_to: RoundTo = 8,
    ignore: Sequence[str] = (),
    criterion: str = "activation",
    calibration: Sequence[torch.Tensor] = (),
    hidden: bool = False,
    precisions: Sequence[str] = ("fp32",),
    depth: bool = False,
) -> SearchSpace:
    """The space of a :class:`SentenceEmbedder`; ``example_input`` is ``(1, seq_len)`` token ids.

    ``round_to`` applies to MLP (and hidden) widths; heads are counted one by one. ``ignore``
    names groups (``...attention.self`` or ``...intermediate.dense``) left unpruned.
    ``calibration``: token-id batches for the ``activation`` criterion. ``precisions``: what a
    policy may run each group in. ``depth``: whether policies may also remove whole encoder
    layers (attention and MLP; the hidden states pass on) — every layer none of whose groups
    is ignored.
    """
    from search_spaces.graph import SpaceError
    from search_spaces.transformers.prune import group_importance

    if not is_transformer(model):
        raise SpaceError(f"{type(model).__name__} is not a sentence embedder")
    if not 0.0 <= max_ratio < 1.0:
        raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
    if criterion not in CRITERIA:
        raise SpaceError(
            f"search_space.criterion {criterion!r} is not supported for transformer models; "
            f"use one of {', '.join(CRITERIA)}"
        )
    if example_input.dim() != 2 or example_input.dtype != torch.long:
        raise SpaceError("a transformer space needs (batch, seq_len) token ids as its example input")
    seq = int(example_input.shape[1])
    bl = blocks(model)
    known = {b.heads_group for b in bl} | {b.mlp_group for b in bl} | {HIDDEN_GROUP}
    missing = [n for n in ignore if n not in known]
    if missing:
        raise SpaceError(f"ignore: no transformer group named {missing[0]!r}")
    costs = _costs(model, seq, hidden)
    scores = group_importance(model, criterion, calibration, hidden=hidden)
    specs: list[tuple[str, str, int, int, tuple[str, ...]]] = []
    for b in bl:
        h = b.query.in_features
        specs.append(
            (b.heads_group, "heads", b.attention.num_attention_heads, h,
             tuple(f"{b.prefix}.{n}" for n in ("attention.self.query", "attention.self.key",
                                                  "attention.self.value", "attention.output.dense")))
        )
        specs.append(
            (b.mlp_group, "mlp", b.fc1.out_features, h, (b.mlp_group, f"{b.prefix}.output.dense"))
        )
    if hidden:
        h = model.backbone.embeddings.word_embeddings.embedding_dim
        specs.append((HIDDEN_GROUP, "hidden", h, h, (HIDDEN_GROUP,)))
    groups: list[Group] = []
    for name, kind, channels, in_ch, layers in specs:
        if name in ignore:
            continue
        s = scores[name].sort().values
        mean = float(s.mean()) if s.numel() else 0.0
        touched = [c for c in costs if name in c.scale_by]
        groups.append(
            Group(
                name=name,
                index=len(groups),
                kind=kind,
                channels=int(channels),
                in_channels=int(in_ch),
                kernel=1,
                stride=1,
                macs=sum(c.macs for c in touched),
                params=sum(c.params for c in touched),
                layers=layers,
                round_to=1,
                min_channels=1,
                importance=tuple(float(v) / mean if mean > 0 else 1.0 for v in s),
                # the hidden width runs through every layer: no linears of its own to quantize
                weights=() if kind == "hidden" else layers,
            )
        )
    if not groups:
        raise SpaceError("every transformer group is ignored: nothing to prune")
    removable = [b.prefix for b in bl if b.heads_group not in ignore and b.mlp_group not in ignore]
    units = units_of(removable, "layer", groups, costs) if depth else ()
    return SearchSpace(
        groups=tuple(groups),
        costs=tuple(costs),
        dense_macs=int(sum(c.macs for c in costs)),
        dense_params=_n(*model.parameters()),
        input_shape=(seq,),
        max_ratio=max_ratio,
        round_to=round_to,
        ignored=tuple(ignore),
        precisions=tuple(precisions),
        units=units,
    )


def is_transformer_space(space: SearchSpace) -> bool:
    return any(g.kind in ("heads", "mlp", "hidden") for g in space.groups)
