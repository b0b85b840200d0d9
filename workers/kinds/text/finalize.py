"""Finalizing a sentence-embedder candidate: longer distillation, test fidelity, bundle, checks.

Each candidate is pruned (the search's criterion) and distilled to the dense embeddings for the
search's ``finetune_steps`` plus ``finetune_epochs`` passes over the training sentences (AdamW,
MSE; one-shot: the text kind refuses ``schedule: agp``; ``distil_layers`` adds the kept layers'
hidden states as targets); the test split is scored (mean cosine
to the dense embeddings, pairwise-similarity Spearman, k-NN overlap); the bundle is
``search_spaces.transformers.bundle``'s, and every exported program is checked against the
model: ONNX in onnxruntime at two batch and sequence sizes, the safetensors rebuild, TorchScript.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.space import Policy
from workers.kinds.base import CandidateFinalizer, FinalizeContext, ModelKind
from workers.kinds.text.scoring import (
    TextScoring,
    embed,
    length_batches,
    mean_cosine,
    ranking_fidelity,
)


class TextFinalizer(CandidateFinalizer):
    def __init__(self, kind: ModelKind, ctx: FinalizeContext) -> None:
        assert isinstance(ctx.scoring, TextScoring)
        self.kind, self.ctx, self.scoring = kind, ctx, ctx.scoring
        task = ctx.task
        self.test_batches = length_batches(task.splits.test.tensors[0], self.scoring.pad)
        self.dense_test = embed(self.scoring.ctx.dense, self.test_batches, ctx.device)
        per_epoch = math.ceil(len(task.splits.train) / self.scoring.distil_batch)
        self.steps = task.spec.evaluation.finetune_steps + round(ctx.spec.finetune_epochs * per_epoch)
        self.check_inputs = [ctx.example.cpu(), self.test_batches[-1][:3].cpu()]

    def fine_tuned(self, rank: int, policy: Policy) -> nn.Module:
        on, total = self.ctx.on_progress, self.steps

        def progress(step: int) -> None:
            if step % 20 == 0:
                on({"rank": rank, "stage": "distil", "step": step, "steps": total})

        return self.scoring.prune(policy, steps=total, on_step=progress,
                                  layer_weight=self.ctx.spec.distil_layers)

    def tested(self, model: nn.Module) -> dict[str, Any]:
        got = embed(model, self.test_batches, self.ctx.device)
        cosine = mean_cosine(got, self.dense_test)
        fidelity = ranking_fidelity(got, self.dense_test)
        spec = self.ctx.task.spec
        return {
            "test_quality": cosine,
            "dense_test_quality": 1.0,  # the dense embeddings' cosine with themselves
            "test_cosine": cosine,
            **{f"test_{k}": v for k, v in fidelity.items()},
            "seq_len": spec.target.seq_len,
            "batch_size": spec.target.batch_size,
            "distil_steps": self.steps,
            "distil_layers": self.ctx.spec.distil_layers,
        }

    def export(self, staging: Path, model: nn.Module, policy: Policy, metrics: dict[str, Any]) -> list[str]:
        from search_spaces.transformers.bundle import save_sentence_embedder
        from search_spaces.transformers.model import SentenceEmbedder

        assert isinstance(model, SentenceEmbedder)  # a pruned copy of the dense embedder
        task, export = self.ctx.task, self.ctx.spec.export
        save_sentence_embedder(
            staging, model, example=self.ctx.example.cpu(), onnx="onnx" in export,
            torchscript="torchscript" in export,
            extra={"source": task.spec.model.source, "kept": task.space.kept(policy),
                   # a depth search's kept encoder layers (``sizes.removed`` has the others' indices)
                   **({"kept_layers": task.space.kept_units(policy)} if task.space.depth else {})},
        )
        (staging / "policy.json").write_text(json.dumps(policy, indent=2))
        return list(export)

    def verify(self, staging: Path, model: nn.Module, formats: list[str]) -> tuple[dict[str, float], float]:
        from search_spaces.transformers.bundle import load_sentence_embedder, onnx_max_diff

        inputs = self.check_inputs
        diffs: dict[str, float] = {}
        with torch.no_grad():
            want = torch.cat([model(x).flatten() for x in inputs])
            if "onnx" in formats:
                diffs["onnx"] = onnx_max_diff(staging / "model.onnx", model, inputs)
            if "safetensors" in formats:
                rebuilt = load_sentence_embedder(staging)
                diffs["safetensors"] = max((rebuilt(x) - model(x)).abs().max().item() for x in inputs)
            if "torchscript" in formats:
                ts = torch.jit.load(str(staging / "model.ts"), map_location="cpu")
                diffs["torchscript"] = max((ts(x) - model(x)).abs().max().item() for x in inputs)
        return diffs, self.kind.export_tolerance(want)
