"""Scoring and distilling pruned sentence embedders (the text kind's part of the Evaluator).

``embedding_cosine``: the mean cosine between the pruned and the dense model's pooled,
normalised embeddings of the validation sentences (label-free; at most ``val_samples``, 256 by
default). Beside it, in ``Metrics.extra``: ``spearman_pairwise`` (Spearman correlation of all
pairwise similarities, pruned vs dense: does the model still rank sentence pairs alike) and
``knn10_overlap`` (mean share of each sentence's 10 nearest neighbours that stay the same).
Batches are sorted by length and trimmed to their longest sentence (dynamic padding): docstring
sentences are ~20 tokens, so this is several times cheaper than padding to ``seq_len``.

``evaluation.finetune_steps`` here means distillation: AdamW (lr 1e-4) on the MSE between the
pruned and the dense embeddings of fixed training batches (at most 32 sentences each).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from search_spaces.training import batch_inputs
from search_spaces.transformers.model import blocks, layer_outputs
from workers.kinds.base import PolicyScoring, QualityFn, ScoringContext
from workers.kinds.batches import cycle, shuffled

if TYPE_CHECKING:
    from search_spaces.space import Policy

DEFAULT_VAL_SENTENCES = 256
CALIBRATION_SENTENCES = 256  # activation statistics: enough for stable per-channel RMS
DISTIL_BATCH = 32
DISTIL_LR = 1e-4


def trim(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Drops the all-padding tail columns of a batch."""
    length = int((ids != pad).sum(1).max().clamp(min=1))
    return ids[:, :length]


def calibration_text(batches: Sequence[Any], pad: int, limit: int = CALIBRATION_SENTENCES) -> list[torch.Tensor]:
    """The first ``limit`` calibration sentences, length-sorted and trimmed (cheap statistics)."""
    rows = [b[0] if isinstance(b, list | tuple) else b for b in batches]
    if not rows:
        return []
    return length_batches(torch.cat(rows)[:limit], pad)


def length_batches(ids: torch.Tensor, pad: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Rows sorted by length (stable), batched and trimmed; order is restored by ``order``."""
    order = torch.argsort((ids != pad).sum(1), stable=True)
    return [trim(ids[order[i : i + batch_size]], pad) for i in range(0, len(ids), batch_size)]


@torch.no_grad()
def embed(model: nn.Module, batches: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat([model(b.to(device)).float().cpu() for b in batches])


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=1).mean().item()


def ranking_fidelity(pruned: torch.Tensor, dense: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Spearman of pairwise similarities and k-NN overlap, pruned vs dense embeddings."""
    from scipy.stats import spearmanr

    p, d = F.normalize(pruned, dim=1), F.normalize(dense, dim=1)
    sp, sd = p @ p.T, d @ d.T
    iu = torch.triu_indices(len(p), len(p), offset=1)
    rho = float(spearmanr(sp[iu[0], iu[1]].numpy(), sd[iu[0], iu[1]].numpy()).statistic)
    k = min(k, len(p) - 1)
    if k < 1:
        return {"spearman_pairwise": rho}
    eye = torch.eye(len(p), dtype=torch.bool)
    nn_p = sp.masked_fill(eye, -2).topk(k, dim=1).indices
    nn_d = sd.masked_fill(eye, -2).topk(k, dim=1).indices
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(nn_p, nn_d, strict=True))
    return {"spearman_pairwise": rho, f"knn{k}_overlap": overlap / (k * len(p))}


@dataclass(frozen=True)
class LayerTargets:
    """Layer-wise distillation (TinyBERT-style), beside the final embedding: the hidden states
    entering each kept encoder layer are pulled toward those entering the same layer of the dense
    model, so after a removed span the layer before it learns to stand in for the span.

    ``pairs``: (student layer whose output is pulled, dense layer whose output is the target).
    """

    teacher: nn.Module
    pairs: tuple[tuple[int, int], ...]
    weight: float
    pad: int

    @classmethod
    def kept(cls, teacher: nn.Module, kept: Sequence[int], weight: float, pad: int) -> LayerTargets:
        """The inputs of the kept layers after the first: layer ``a`` followed by kept ``b`` maps
        to the dense model's layer ``b - 1``; the last kept layer's output is the pooled one,
        which the embedding loss already targets."""
        return cls(teacher, tuple((a, b - 1) for a, b in itertools.pairwise(kept)), weight, pad)

    def loss(self, ids: torch.Tensor, student: dict[int, torch.Tensor]) -> torch.Tensor:
        """Mean over the pairs of the squared error relative to the teacher's (real tokens only)."""
        with torch.no_grad(), layer_outputs(self.teacher, [t for _, t in self.pairs]) as teacher:
            self.teacher(ids)
        mask = (ids != self.pad).unsqueeze(-1)
        errors = [
            ((student[s] - teacher[t]) ** 2 * mask).sum() / (teacher[t] ** 2 * mask).sum().clamp(min=1e-12)
            for s, t in self.pairs
        ]
        return torch.stack(errors).mean()


def distil(
    model: nn.Module,
    teacher_batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    *,
    lr: float = DISTIL_LR,
    on_step: Callable[[int], None] | None = None,
    layer_targets: LayerTargets | None = None,
) -> None:
    """AdamW on the MSE to the dense embeddings; ``teacher_batches`` yields (ids, targets).
    With ``layer_targets``, plus ``weight`` × their relative error."""
    if steps <= 0:
        return
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    layers = [a for a, _ in layer_targets.pairs] if layer_targets is not None else []
    for step in range(steps):
        ids, target = next(teacher_batches)
        with layer_outputs(model, layers) as hidden:
            loss = F.mse_loss(model(ids), target)
        if layer_targets is not None and layers:
            loss = loss + layer_targets.weight * layer_targets.loss(ids, hidden)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)
    model.eval()


class TextScoring(PolicyScoring):
    """Metric ``embedding_cosine``; prune (the search's criterion) + distil."""

    def __init__(self, ctx: ScoringContext) -> None:
        self.ctx = ctx
        task = ctx.task
        self.pad = int(task.splits.pad_token_id)
        spec = task.spec.evaluation
        cap = spec.val_samples or DEFAULT_VAL_SENTENCES
        val_ids = task.splits.val.tensors[0][:cap]
        self.val_batches = length_batches(val_ids, self.pad)
        self.dense_val = embed(ctx.dense, self.val_batches, ctx.device)
        self.distil_batch = min(spec.batch_size, DISTIL_BATCH)
        self._teacher: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.last_extra: dict[str, Any] = {}
        # the evaluator's calibration batches (seed, order, size), trimmed: activation statistics
        train = cycle(shuffled(task.splits.train, spec.batch_size, task.spec.seed))
        inputs = [batch_inputs(b).to(ctx.device) for b in itertools.islice(train, spec.calibration_batches)]
        self.calibration = calibration_text(inputs, self.pad)

    def train_loader(self) -> DataLoader:
        return shuffled(self.ctx.task.splits.train, self.distil_batch, self.ctx.task.spec.seed)

    def teacher_batches(self, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same (trimmed ids, dense embeddings) batches on every call; targets cached."""
        if len(self._teacher) < steps:
            loader = cycle(self.train_loader())
            dense = self.ctx.dense
            with torch.no_grad():
                dense.eval()
                for batch in itertools.islice(loader, len(self._teacher), steps):
                    ids = trim(batch[0], self.pad).to(self.ctx.device)
                    self._teacher.append((ids, dense(ids)))
        return iter(self._teacher[:steps])

    def quality(self, model: nn.Module) -> float:
        got = embed(model, self.val_batches, self.ctx.device)
        self.last_extra = ranking_fidelity(got, self.dense_val)
        return mean_cosine(got, self.dense_val)

    def metric(self, name: str) -> QualityFn:
        if name != "embedding_cosine":  # the spec's validation refuses others for text
            raise ValueError(f"metric {name!r}: a text task is scored by 'embedding_cosine'")
        return self.quality

    def apply(self, policy: Policy) -> nn.Module:
        from search_spaces.transformers.model import SentenceEmbedder
        from search_spaces.transformers.prune import apply_transformer_policy

        dense, task = self.ctx.dense, self.ctx.task
        assert isinstance(dense, SentenceEmbedder)  # the text task's model (workers/kinds/text/task.py)
        return apply_transformer_policy(
            dense, task.space, policy, criterion=task.criterion, calibration=self.calibration
        )

    def prune(
        self,
        policy: Policy,
        *,
        steps: int | None = None,
        on_step: Callable[[int], None] | None = None,
        layer_weight: float = 0.0,
    ) -> nn.Module:
        """The policy applied and distilled for ``steps`` (the search's ``finetune_steps`` by
        default); ``layer_weight`` > 0 adds layer-wise targets (:class:`LayerTargets`)."""
        pruned = self.apply(policy)
        steps = self.ctx.task.spec.evaluation.finetune_steps if steps is None else steps
        targets = self.layer_targets(pruned, layer_weight) if layer_weight > 0 else None
        distil(pruned, self.teacher_batches(steps), steps, on_step=on_step, layer_targets=targets)
        return pruned.eval()

    def layer_targets(self, pruned: nn.Module, weight: float) -> LayerTargets:
        return LayerTargets.kept(self.ctx.dense, [b.index for b in blocks(pruned)], weight, self.pad)
