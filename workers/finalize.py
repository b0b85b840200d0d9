"""Finalization: turn the best searched policies into fine-tuned, verified artifact bundles.

For each candidate (the service passes the top feasible Pareto points, best first): prune the
dense model, fine-tune it for ``finetune_epochs`` — one-shot, or with the gradual schedule of
Zhu & Gupta (2017, "To prune, or not to prune"): the ratios grow from 0 to the target along
``r_t = r_f·(1 − (1 − t/T)^3)``, re-pruning the already-pruned model at each step so early
training adapts to mild pruning — then score the test split (reserved for this report),
re-measure latency, export the bundle and check that the exported TorchScript / ONNX programs
compute what the model computes before the bundle is accepted.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from agents.types import Metrics
from search_spaces.calibrate import recalibrate_bn
from search_spaces.space import Policy, SearchSpace
from search_spaces.training import evaluate_accuracy, train_steps
from workers.artifacts import (
    ArtifactInfo,
    FinalizeError,
    ProgressFn,
    bundle_files,
    check_writable,
    cost_metrics,
)
from workers.evaluator import Evaluator, cycle, predictions
from workers.spec import FinalizeSpec
from workers.task import Task


def agp_ratios(final: Policy, step: int, steps: int) -> Policy:
    """Zhu & Gupta's cubic schedule: the ratios after pruning step ``step`` of ``steps`` (1-based)."""
    frac = 1.0 - (1.0 - step / steps) ** 3
    return {g: r * frac for g, r in final.items()}


class _Finalizer:
    def __init__(self, task: Task, spec: FinalizeSpec, on_progress: ProgressFn | None) -> None:
        self.task = task
        self.spec = spec
        self.space: SearchSpace = task.space
        self.on_progress = on_progress or (lambda event: None)
        # reuses the search's evaluator for data, calibration batches and the latency meter
        self.ev = Evaluator(task)
        ev_spec = task.spec.evaluation
        self.test_loader = DataLoader(task.splits.test, batch_size=ev_spec.batch_size)
        gen = torch.Generator().manual_seed(task.spec.seed)
        self.train_loader = DataLoader(
            task.splits.train, batch_size=64, shuffle=True, generator=gen
        )
        self.teacher = None if task.spec.metric == "accuracy" else self.ev.dense

    def _prune_to(self, model: nn.Module, policy: Policy) -> nn.Module:
        from search_spaces.prune import prune_to_counts

        kept = self.space.kept(policy)
        return prune_to_counts(model, kept, self.ev.example, criterion=self.task.criterion)

    def fine_tuned(self, rank: int, policy: Policy) -> nn.Module:
        total = round(self.spec.finetune_epochs * len(self.train_loader))
        batches = cycle(self.train_loader)

        def progress(done: int) -> None:
            if done % 20 == 0:
                self.on_progress({"rank": rank, "stage": "finetune", "step": done, "steps": total})

        if self.spec.schedule == "oneshot":
            model = self.ev.prune(policy)  # prune + the search's recovery (lsq by default)
            train_steps(
                model, batches, total, device=self.ev.device, teacher=self.teacher, on_step=progress,
                cosine=True,  # end at a low rate: a constant 0.01 undid the recovered model's accuracy
            )
            return model.eval()
        # AGP: prune steps spread over the first half of training, then fine-tune at the target
        import copy

        model = copy.deepcopy(self.ev.dense)
        prune_steps = 5
        per_step = max(1, (total // 2) // prune_steps) if total > 0 else 0
        done = 0
        for k in range(1, prune_steps + 1):
            self._prune_to(model, agp_ratios(policy, k, prune_steps))
            if self.ev.calibration_inputs:
                recalibrate_bn(model, self.ev.calibration_inputs)
            self.on_progress(
                {"rank": rank, "stage": "agp", "prune_step": k, "prune_steps": prune_steps}
            )
            train_steps(model, batches, per_step, device=self.ev.device, teacher=self.teacher)
            done += per_step
        train_steps(
            model,
            batches,
            max(0, total - done),
            device=self.ev.device,
            teacher=self.teacher,
            on_step=progress,
            cosine=True,
        )
        return model.eval()

    def test_quality(self, model: nn.Module) -> dict[str, float]:
        out = {"test_accuracy": evaluate_accuracy(model, self.test_loader, device=self.ev.device)}
        dense_pred = predictions(self.ev.dense, self.test_loader, self.ev.device)
        out["test_agreement"] = (
            (predictions(model, self.test_loader, self.ev.device) == dense_pred)
            .float()
            .mean()
            .item()
        )
        return out

    def verify(self, bundle: Path, model: nn.Module, formats: Sequence[str]) -> dict[str, float]:
        """Max abs difference of each exported program's outputs from the model's (on the CPU,
        where the exported programs are loaded)."""
        example = self.ev.example.cpu()
        x = torch.cat([example, torch.randn_like(example)])
        model = model.cpu().eval()
        with torch.no_grad():
            want = model(x)
        diffs: dict[str, float] = {}
        if "torchscript" in formats:
            ts = torch.jit.load(str(bundle / "model.ts"), map_location="cpu")
            diffs["torchscript"] = (ts(x) - want).abs().max().item()
        if "onnx" in formats:
            import onnx
            from onnx.reference import ReferenceEvaluator

            sess = ReferenceEvaluator(onnx.load(str(bundle / "model.onnx")))
            name = sess.input_names[0]
            # the exported graph may fix the batch dimension: check example by example
            runs: list[Any] = [
                sess.run(None, {name: x[i : i + 1].numpy()}) for i in range(len(x))
            ]
            got = torch.cat([torch.as_tensor(r[0]) for r in runs])
            diffs["onnx"] = (got - want).abs().max().item()
        if "safetensors" in formats:
            from search_spaces.bundle import load_bundle

            rebuilt = load_bundle(bundle).eval()
            with torch.no_grad():
                diffs["safetensors"] = (rebuilt(x) - want).abs().max().item()
        tol = 1e-3 * max(1.0, want.abs().max().item())
        bad = {k: v for k, v in diffs.items() if not v <= tol}
        if bad:
            raise FinalizeError(f"exported outputs differ from the model beyond {tol:.2g}: {bad}")
        return diffs


def _source(task: Task) -> str:
    m = task.spec.model
    return m.zoo if m.zoo is not None else f"entrypoint:{m.entrypoint}"


def finalize(
    task: Task,
    candidates: list[tuple[Policy, Metrics]],
    spec: FinalizeSpec,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> list[ArtifactInfo]:
    """Fine-tunes, measures, exports and verifies the first ``spec.top_k`` candidates.

    With ``spec.baseline`` one more: the service appends the uniform-fill baseline when it is
    not already among them.
    """
    from workers.text_task import is_text_task

    if is_text_task(task):  # sentence embedders: distillation, embedding fidelity, own bundle
        from workers.text_finalize import finalize_text

        return finalize_text(task, candidates, spec, out_dir, on_progress=on_progress)

    out_dir = Path(out_dir)
    check_writable(out_dir)
    chosen = candidates[: spec.top_k + int(spec.baseline)]  # the service appends the baseline
    if not chosen:
        return []
    fin = _Finalizer(task, spec, on_progress)
    return [
        _finalize_one(fin, task, spec, out_dir, rank, policy, searched)
        for rank, (policy, searched) in enumerate(chosen, start=1)
    ]


def _finalize_one(
    fin: _Finalizer,
    task: Task,
    spec: FinalizeSpec,
    out_dir: Path,
    rank: int,
    policy: Policy,
    searched: Metrics,
) -> ArtifactInfo:
    """One candidate: fine-tuned, measured, exported, verified, published as ``rank-<rank>``."""
    t0 = time.perf_counter()
    policy = task.space.validate(policy)
    fin.on_progress({"rank": rank, "stage": "start", "policy": policy})
    # measured where it was searched (the evaluator's device, with its inputs), then exported
    # and verified on the CPU with CPU inputs: one device per stage, never a mix
    model = fin.fine_tuned(rank, policy).to(fin.ev.device)
    metrics = _measured(fin, task, spec, policy, searched, model)
    model = model.cpu()
    bundle = _exported_and_verified(fin, task, spec, out_dir / f"rank-{rank}", policy, model, metrics)
    files = bundle_files(bundle)
    metrics["finalize_seconds"] = time.perf_counter() - t0
    fin.on_progress({"rank": rank, "stage": "done", "dir": str(bundle), "metrics": metrics})
    return ArtifactInfo(rank, bundle, files, metrics, policy)


def _measured(
    fin: _Finalizer, task: Task, spec: FinalizeSpec, policy: Policy, searched: Metrics, model: nn.Module
) -> dict[str, Any]:
    """The fine-tuned model's metrics: test and validation quality, costs, latency."""
    signature = task.space.signature(policy)
    macs, params = fin.ev.costs(signature, model)
    lat = fin.ev.latency.measure(signature, model, use_cache=False)
    return {
        **fin.test_quality(model),
        "val_quality": fin.ev.metric_fn(model),
        "searched_quality": searched.quality,
        "metric": task.spec.metric,
        **cost_metrics(task.space, macs, params, lat),
        "node": fin.ev.node,
        "schedule": spec.schedule,
        "finetune_epochs": spec.finetune_epochs,
    }


def _exported_and_verified(
    fin: _Finalizer,
    task: Task,
    spec: FinalizeSpec,
    bundle: Path,
    policy: Policy,
    model: nn.Module,
    metrics: dict[str, Any],
) -> Path:
    """The bundle written to a staging directory, each export checked against the model, then
    moved to ``bundle``: a bundle appears only once it is complete and verified."""
    from search_spaces.bundle import architecture, save_bundle

    staging = bundle.parent / f".{bundle.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    example = fin.ev.example.cpu()
    with torch.no_grad():
        num_classes = int(model(example).shape[1])
    arch = architecture(
        _source(task),
        num_classes=num_classes,
        in_channels=int(example.shape[1]),
        input_shape=tuple(example.shape[1:]),
        kept=task.space.kept(policy),
    )
    written = save_bundle(
        staging,
        model,
        arch=arch,
        policy=policy,
        metrics=metrics,
        onnx="onnx" in spec.export,
        torchscript="torchscript" in spec.export,
    )
    # a format the model cannot be exported to is reported, not silently dropped
    formats = [f for f in spec.export if f != "onnx" or written.get("model.onnx") == "onnx"]
    if "onnx" in spec.export and "onnx" not in formats:
        metrics["export_errors"] = {"onnx": written.get("model.onnx")}
    metrics["export_max_abs_diff"] = fin.verify(staging, model, formats)
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    shutil.rmtree(bundle, ignore_errors=True)
    staging.replace(bundle)
    return bundle
