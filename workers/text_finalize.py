"""Finalization of sentence-embedder candidates: longer distillation, test fidelity, export.

For each candidate: prune (the search's criterion), distil to the dense embeddings for
``finetune_epochs`` passes over the training sentences (AdamW, MSE; one-shot — a text job's spec
refuses ``schedule: agp``), score the
test split (mean cosine to the dense embeddings, pairwise-similarity Spearman, k-NN overlap),
re-measure latency against the dense model, then write the bundle
(``search_spaces.transformers.bundle``) and check every exported program against the model:
ONNX in onnxruntime at two batch and sequence sizes, the safetensors rebuild, TorchScript.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from agents.types import Metrics
from search_spaces.space import Policy
from workers.artifacts import (
    ArtifactInfo,
    FinalizeError,
    ProgressFn,
    bundle_files,
    check_writable,
    cost_metrics,
)
from workers.evaluator import Evaluator
from workers.spec import FinalizeSpec
from workers.task import Task
from workers.text_eval import embed, length_batches, mean_cosine, ranking_fidelity


def _verify(bundle: Path, model: torch.nn.Module, inputs: list[torch.Tensor], formats: list[str]) -> dict[str, float]:
    from search_spaces.transformers.bundle import load_sentence_embedder, onnx_max_diff

    diffs: dict[str, float] = {}
    with torch.no_grad():
        if "onnx" in formats:
            diffs["onnx"] = onnx_max_diff(bundle / "model.onnx", model, inputs)
        if "safetensors" in formats:
            rebuilt = load_sentence_embedder(bundle)
            diffs["safetensors"] = max((rebuilt(x) - model(x)).abs().max().item() for x in inputs)
        if "torchscript" in formats:
            ts = torch.jit.load(str(bundle / "model.ts"), map_location="cpu")
            diffs["torchscript"] = max((ts(x) - model(x)).abs().max().item() for x in inputs)
    bad = {k: v for k, v in diffs.items() if not v <= 1e-4}
    if bad:
        raise FinalizeError(f"exported outputs differ from the model beyond 1e-4: {bad}")
    return diffs


def finalize_text(
    task: Task,
    candidates: list[tuple[Policy, Metrics]],
    spec: FinalizeSpec,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> list[ArtifactInfo]:
    from search_spaces.transformers.bundle import save_sentence_embedder
    from search_spaces.transformers.model import SentenceEmbedder

    out_dir = Path(out_dir)
    check_writable(out_dir)
    chosen = candidates[: spec.top_k]
    if not chosen:
        return []
    on = on_progress or (lambda event: None)
    ev = Evaluator(task)
    te = ev.text
    assert te is not None
    pad = te.pad
    test_batches = length_batches(task.splits.test.tensors[0], pad)
    dense_test = embed(ev.dense, test_batches, ev.device)
    per_epoch = math.ceil(len(task.splits.train) / te.distil_batch)
    search_steps = task.spec.evaluation.finetune_steps
    total = search_steps + round(spec.finetune_epochs * per_epoch)
    check_inputs = [ev.example.cpu(), test_batches[-1][:3].cpu()]
    artifacts: list[ArtifactInfo] = []
    for rank, (policy, searched) in enumerate(chosen, start=1):
        t0 = time.perf_counter()
        policy = task.space.validate(policy)
        on({"rank": rank, "stage": "start", "policy": policy})

        def progress(step: int, rank: int = rank) -> None:
            if step % 20 == 0:
                on({"rank": rank, "stage": "distil", "step": step, "steps": total})

        model = te.prune(policy, distil_steps=total, on_step=progress)
        assert isinstance(model, SentenceEmbedder)  # a pruned copy of the dense embedder
        signature = task.space.signature(policy)
        macs, params = ev.costs(signature, model)
        lat = ev.latency.measure(signature, model.to(ev.device), use_cache=False)
        model = model.cpu().eval()
        got = embed(model, test_batches, torch.device("cpu"))
        fidelity = ranking_fidelity(got, dense_test)
        metrics: dict[str, Any] = {
            "test_cosine": mean_cosine(got, dense_test),
            **{f"test_{k}": v for k, v in fidelity.items()},
            "val_quality": te.quality(model),
            "searched_quality": searched.quality,
            "metric": task.spec.metric,
            **cost_metrics(task.space, macs, params, lat),
            "seq_len": task.spec.target.seq_len,
            "batch_size": task.spec.target.batch_size,
            "node": ev.node,
            "schedule": spec.schedule,
            "distil_steps": total,
            "finetune_epochs": spec.finetune_epochs,
        }
        bundle = out_dir / f"rank-{rank}"
        staging = out_dir / f".rank-{rank}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        source = task.spec.model.zoo or f"entrypoint:{task.spec.model.entrypoint}"
        save_sentence_embedder(
            staging,
            model,
            example=ev.example.cpu(),
            onnx="onnx" in spec.export,
            torchscript="torchscript" in spec.export,
            extra={"source": source, "kept": task.space.kept(policy)},
        )
        (staging / "policy.json").write_text(json.dumps(policy, indent=2))
        metrics["export_max_abs_diff"] = _verify(staging, model, check_inputs, list(spec.export))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        shutil.rmtree(bundle, ignore_errors=True)
        staging.replace(bundle)  # a bundle appears only once it is complete and verified
        files = bundle_files(bundle)
        metrics["finalize_seconds"] = time.perf_counter() - t0
        artifacts.append(ArtifactInfo(rank, bundle, files, metrics, policy))
        on({"rank": rank, "stage": "done", "dir": str(bundle), "metrics": metrics})
    return artifacts
