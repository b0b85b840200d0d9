"""Finalization: turn the best searched policies into fine-tuned, verified artifact bundles.

The candidates are the service's: the top feasible Pareto points, best first, then — with
``finalize.baseline`` — the uniform-fill baseline as the last one (when it is not already among
them), so every job, whatever its model kind, reports the search's best beside the baseline
after the same fine-tune. For each candidate: with a latency budget, its architecture measured
in the job's runtime and tightened while over the budget (:mod:`workers.delivered`, before the
expensive part), then fine-tune (the model kind's way), measure (test quality, validation
quality, costs), export to a staging directory, verify each export against the model (the kind's
tolerance), measure the exported file itself against the dense model in the job's runtime (the
delivered latency, which ``budget_met`` is about), then publish by renaming: a bundle appears
only once it is complete and verified.

A baseline is compared with the best found at equal measured cost: it is placed no slower than
the best's published file, its architecture timed side by side with that file (not anywhere
within the budget's tolerance, where a baseline 5 % slower than the best would be credited with
the quality that speed buys; nor against a figure from another timing, a few per cent off). Once
all are published, every published file is timed again beside the others and the dense model in
one timing, and each artifact says its latency there (``side_by_side_latency_ratio``) and as a
share of the best's (``latency_to_best``): the report's comparison is read from one run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

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
from workers.delivered import (
    PLACING_TRIES_FACTOR,
    Fitted,
    LatencyBudget,
    delivery_metrics,
    final_rounds,
    fit_to_budget,
    published_latency,
    side_by_side,
)
from workers.evaluator import Evaluator
from workers.kinds.base import CandidateFinalizer, FinalizeContext
from workers.latency import Latency
from workers.quantized import ship_precision
from workers.runtimes.base import Run
from workers.spec import FinalizeSpec
from workers.task_types import Task

__all__ = ["FinalizeError", "finalize"]


def finalize(
    task: Task,
    candidates: list[tuple[Policy, Metrics]],
    spec: FinalizeSpec,
    out_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> list[ArtifactInfo]:
    """Fine-tunes, measures, exports and verifies the first ``spec.top_k`` candidates, plus the
    baselines the service appends with ``spec.baseline`` (each labelled by its role in its
    metrics' ``extra["role"]``; an unlabelled last one is the uniform-fill baseline)."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    labelled = [c for c in candidates if c[1] is not None and c[1].extra.get("role")]
    if labelled:  # the service's baselines, after the ranked candidates
        ranked = [c for c in candidates if all(c is not b for b in labelled)]
        chosen = ranked[: spec.top_k] + (labelled if spec.baseline else [])
    else:
        chosen = candidates[: spec.top_k + int(spec.baseline)]
    if not chosen:
        return []
    on = on_progress or (lambda event: None)
    ev = Evaluator(task)  # data, calibration batches, the kind's scoring, the latency meter
    fin = ev.kind.finalizer(FinalizeContext(task, ev.scoring, ev.device, ev.example, spec, on, ev.metric_fn))
    artifacts: list[ArtifactInfo] = []
    files: list[Run] = []  # each artifact's published file, loaded
    best: int | None = None  # the first ranked (unlabelled) artifact's index
    for rank, (policy, searched) in enumerate(chosen, start=1):
        extra: dict[str, Any] = {}
        # a baseline the service appended after the ranked candidates carries its role
        role = searched.extra.get("role") if searched is not None else None
        if role is None and spec.baseline and rank == len(chosen) > spec.top_k:
            role = "baseline"  # a caller that appends the uniform-fill baseline unlabelled
        placed_at, best_file = None, None
        if role is not None:
            extra["role"] = role
            if best is not None:  # top_k 0: the baselines alone, nothing to compare
                extra["best_test_quality"] = artifacts[best].metrics["test_quality"]
                placed_at = LatencyBudget.matching(artifacts[best].metrics)
                if placed_at is not None:
                    extra["matched_latency_ratio"] = artifacts[best].metrics["delivered_latency_ratio"]
                    best_file = files[best]
        art, file = _finalize_one(ev, fin, spec, out_dir, rank, policy, searched, on, extra, placed_at, best_file)
        if role is None and best is None:
            best = len(artifacts)
        artifacts.append(art)
        files.append(file)
    if best is None or len(artifacts) < 2:
        return artifacts
    return _compared_side_by_side(ev, artifacts, files, best)


def _compared_side_by_side(ev: Evaluator, artifacts: list[ArtifactInfo], files: list[Run],
                           best: int) -> list[ArtifactInfo]:
    """Every published file and the dense model timed in one timing; each artifact's metrics (and
    its bundle's metrics.json) gain its ratio to dense there and its latency as a share of the
    best's (``artifacts[best]``)."""
    lats = side_by_side(ev, files, final_rounds(ev.latency.rounds))
    out = []
    for art, lat in zip(artifacts, lats, strict=True):
        art.metrics.update(side_by_side_latency_ratio=lat.ratio, latency_to_best=lat.ms / lats[best].ms)
        _write_metrics(art.dir, art.metrics)
        out.append(dataclasses.replace(art, files=bundle_files(art.dir)))
    return out


def _write_metrics(bundle: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` of a bundle, replaced whole (a reader never sees half a file)."""
    tmp = bundle / ".metrics.json.partial"
    tmp.write_text(json.dumps(metrics, indent=2, default=str))
    os.replace(tmp, bundle / "metrics.json")


def _finalize_one(
    ev: Evaluator,
    fin: CandidateFinalizer,
    spec: FinalizeSpec,
    out_dir: Path,
    rank: int,
    policy: Policy,
    searched: Metrics,
    on: ProgressFn,
    extra: dict[str, Any],
    placed_at: LatencyBudget | None = None,
    best_file: Run | None = None,
) -> tuple[ArtifactInfo, Run]:
    """One candidate: fitted to the latency budget (a baseline to ``placed_at``, timed against
    ``best_file``, the best's published file, when given), fine-tuned, measured, exported,
    verified, its exported file measured, published as ``rank-<rank>``; with its published file,
    loaded. The baseline's metrics also say whether the search's best beat it after the same
    fine-tune (``search_beat_baseline``: the best's ``test_quality`` above the baseline's); its
    ``budget_met`` is about the job's budget."""
    t0 = time.perf_counter()
    policy = ev.space.validate(policy)
    on({"rank": rank, "stage": "start", "policy": policy})
    rounds = final_rounds(ev.latency.rounds)
    budget = LatencyBudget.of(ev.task.spec.budget, spec.latency_tolerance)
    fitted = Fitted(policy, 0, None)
    if budget is not None and extra.get("role") != "quantize-only":
        # cheap before expensive: the architecture before its fine-tune (quantize-only is the
        # unpruned model in int8, reported as it is whatever the budget)
        check = placed_at or budget  # best_file comes only with placed_at: a ratio to that file
        measured = "latency_to_best" if best_file is not None else "latency_ratio"

        tries = spec.tighten * (PLACING_TRIES_FACTOR if best_file is not None else 1)

        def step(k: int, lat: Latency) -> None:
            on({"rank": rank, "stage": "budget", "step": k, "steps": tries,
                measured: lat.ratio, "budget_met": check.met(lat)})

        fitted = fit_to_budget(ev, check, policy, tries=tries, rounds=rounds, on_step=step,
                               best_file=best_file)
        policy = fitted.policy
    # measured where it was searched (the evaluator's device, with its inputs), then exported
    # and verified on the CPU with CPU inputs: one device per stage, never a mix
    model = fin.fine_tuned(rank, ev.space.widths(policy)).to(ev.device)
    metrics = _measured(ev, fin, spec, policy, searched, model)
    metrics.update(fin.fine_tune_notes(rank))
    metrics.update(extra)
    if ev.space.depth:  # what a depth search removed, and the removable units it kept
        metrics.update(removed_units=ev.space.removed_units(policy), kept_layers=ev.space.kept_units(policy))

    published: list[Run] = []

    def delivered(staging: Path, exported: nn.Module) -> None:
        if ev.space.quantizable:  # the precision map; an int8 file is what ships: scored as such
            shipped = ship_precision(ev.kind, staging, ev.space, policy, ev.scoring.quantization_batches())
            if shipped is not None:
                metrics.update(_int8_metrics(ev, fin, policy, metrics, shipped))
        if "best_test_quality" in extra:
            metrics["search_beat_baseline"] = extra["best_test_quality"] > metrics["test_quality"]
        # the exact file published, in the job's runtime, on the job's batch
        lat, source, run = published_latency(ev, staging, exported.to(ev.device).eval(), rounds)
        published.append(run)
        metrics.update(cost_metrics(ev.space, metrics["macs"], metrics["params"], lat))
        metrics.update(delivery_metrics(ev.runtime, lat, searched, fitted, budget, source))

    bundle = _published(fin, out_dir / f"rank-{rank}", policy, model.cpu().eval(), metrics, delivered)
    files = bundle_files(bundle)
    metrics["finalize_seconds"] = time.perf_counter() - t0
    on({"rank": rank, "stage": "done", "dir": str(bundle), "metrics": metrics})
    return ArtifactInfo(rank, bundle, files, metrics, policy), published[0]


def _measured(
    ev: Evaluator, fin: CandidateFinalizer, spec: FinalizeSpec, policy: Policy, searched: Metrics,
    model: nn.Module,
) -> dict[str, Any]:
    """The fine-tuned model's metrics: test and validation quality, costs (latency is measured
    on the exported file, once it is written)."""
    signature = ev.space.signature(policy)
    macs, params = ev.costs(signature, model)
    return {
        **fin.tested(model),
        "val_quality": ev.metric_fn(model),
        "searched_quality": searched.quality if searched is not None else None,
        "metric": ev.task.spec.metric,
        "macs": macs,
        "params": params,
        "node": ev.node,
        "schedule": spec.schedule,
        "finetune_epochs": spec.finetune_epochs,
    }


def _int8_metrics(ev: Evaluator, fin: CandidateFinalizer, policy: Policy, fp32: dict[str, Any],
                  shipped: nn.Module) -> dict[str, Any]:
    """The quantized file's quality (it is what ships), the fp32 pruned model's beside it."""
    return {
        **fin.tested(shipped),
        "val_quality": ev.metric_fn(shipped),
        "fp32_test_quality": fp32["test_quality"],
        "fp32_val_quality": fp32["val_quality"],
        "int8_groups": len(ev.space.int8_groups(policy)),
    }


def _published(
    fin: CandidateFinalizer, bundle: Path, policy: Policy, model: nn.Module, metrics: dict[str, Any],
    delivered: Callable[[Path, nn.Module], None],
) -> Path:
    """The bundle written to a staging directory, each export checked against the model, its
    file measured (``delivered``), then moved to ``bundle``: a bundle appears only once it is
    complete and verified."""
    staging = bundle.parent / f".{bundle.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    formats = fin.export(staging, model, policy, metrics)
    diffs, tol = fin.verify(staging, model, formats)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        raise FinalizeError(f"exported outputs differ from the model beyond {tol:.2g}: {bad}")
    metrics["export_max_abs_diff"] = diffs
    delivered(staging, model)
    _write_metrics(staging, metrics)
    shutil.rmtree(bundle, ignore_errors=True)
    staging.replace(bundle)
    return bundle
