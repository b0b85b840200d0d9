"""Finalizing a CNN candidate: fine-tune, test accuracy, bundle, verification of the exports.

Fine-tuning runs ``finetune_epochs`` — one-shot (prune + the search's recovery, then SGD with a
cosine rate), or with the gradual schedule of Zhu & Gupta (2017, "To prune, or not to prune"):
the ratios grow from 0 to the target along ``r_t = r_f·(1 − (1 − t/T)^3)``, re-pruning the
already-pruned model at each step so early training adapts to mild pruning. The bundle is
``search_spaces.bundle``'s (rebuilt from the model source); TorchScript, ONNX (pure-Python
reference evaluator) and the safetensors rebuild are checked against the model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from search_spaces.calibrate import recalibrate_bn
from search_spaces.space import Policy
from search_spaces.training import evaluate_accuracy, train_steps
from workers.kinds.base import CandidateFinalizer, FinalizeContext, ModelKind
from workers.kinds.batches import cycle, shuffled
from workers.kinds.image.scoring import ImageScoring, predictions

AGP_PRUNE_STEPS = 5


def agp_ratios(final: Policy, step: int, steps: int) -> Policy:
    """Zhu & Gupta's cubic schedule: the ratios after pruning step ``step`` of ``steps`` (1-based)."""
    frac = 1.0 - (1.0 - step / steps) ** 3
    return {g: r * frac for g, r in final.items()}


class ImageFinalizer(CandidateFinalizer):
    def __init__(self, kind: ModelKind, ctx: FinalizeContext) -> None:
        assert isinstance(ctx.scoring, ImageScoring)
        self.kind, self.ctx, self.scoring = kind, ctx, ctx.scoring
        task = ctx.task
        self.test_loader = DataLoader(task.splits.test, batch_size=task.spec.evaluation.batch_size)
        self.train_loader = shuffled(task.splits.train, 64, task.spec.seed)
        self.teacher = None if task.spec.metric == "accuracy" else self.scoring.ctx.dense
        self._dense: tuple[torch.Tensor, float] | None = None
        self._notes: dict[int, dict[str, Any]] = {}

    def fine_tune_notes(self, rank: int) -> dict[str, Any]:
        return self._notes.pop(rank, {})

    def _prune_to(self, model: nn.Module, policy: Policy) -> nn.Module:
        from search_spaces.prune import live_kept, prune_to_counts

        # the model's removed blocks are already identities: the other groups, by a live root
        kept = live_kept(self.ctx.task.space, policy)
        return prune_to_counts(model, kept, self.ctx.example, criterion=self.ctx.task.criterion)

    def fine_tuned(self, rank: int, policy: Policy) -> nn.Module:
        on, device = self.ctx.on_progress, self.ctx.device
        total = round(self.ctx.spec.finetune_epochs * len(self.train_loader))
        batches = cycle(self.train_loader)

        def progress(done: int) -> None:
            if done % 20 == 0:
                on({"rank": rank, "stage": "finetune", "step": done, "steps": total})

        if self.ctx.spec.schedule == "oneshot":
            model = self.scoring.prune(policy)  # prune + the search's recovery (lsq by default)
            if total == 0:
                return model.eval()
            before, recovered = self.ctx.quality(model), copy.deepcopy(model.state_dict())
            train_steps(
                model, batches, total, device=device, teacher=self.teacher, on_step=progress,
                cosine=True,  # end at a low rate: a constant rate undid the recovered model's accuracy
            )
            # a fine-tune that lost validation quality (a narrow network can diverge) does not ship
            kept = self.ctx.quality(model) >= before
            if not kept:
                model.load_state_dict(recovered)
            self._notes[rank] = {"finetune_kept": kept, "recovered_val_quality": before}
            return model.eval()
        # AGP: prune steps spread over the first half of training, then fine-tune at the target;
        # the blocks a depth policy removes go at once (a block is kept or not: nothing to grow)
        from search_spaces.depth import remove_blocks

        model = remove_blocks(copy.deepcopy(self.scoring.ctx.dense), self.ctx.task.space.removed_units(policy))
        per_step = max(1, (total // 2) // AGP_PRUNE_STEPS) if total > 0 else 0
        done = 0
        for k in range(1, AGP_PRUNE_STEPS + 1):
            self._prune_to(model, agp_ratios(policy, k, AGP_PRUNE_STEPS))
            if self.scoring.calibration_inputs:
                recalibrate_bn(model, self.scoring.calibration_inputs)
            on({"rank": rank, "stage": "agp", "prune_step": k, "prune_steps": AGP_PRUNE_STEPS})
            train_steps(model, batches, per_step, device=device, teacher=self.teacher)
            done += per_step
        train_steps(model, batches, max(0, total - done), device=device, teacher=self.teacher,
                    on_step=progress, cosine=True)
        return model.eval()

    def _dense_test(self) -> tuple[torch.Tensor, float]:
        """The dense model's test predictions and accuracy, once per finalize call."""
        if self._dense is None:
            dense, device = self.scoring.ctx.dense, self.ctx.device
            self._dense = (predictions(dense, self.test_loader, device),
                           evaluate_accuracy(dense, self.test_loader, device=device))
        return self._dense

    def tested(self, model: nn.Module) -> dict[str, Any]:
        device = self.ctx.device
        dense_pred, dense_accuracy = self._dense_test()
        accuracy = evaluate_accuracy(model, self.test_loader, device=device)
        agreement = (predictions(model, self.test_loader, device) == dense_pred).float().mean().item()
        by_agreement = self.ctx.task.spec.metric == "agreement"
        return {
            "test_quality": agreement if by_agreement else accuracy,
            "dense_test_quality": 1.0 if by_agreement else dense_accuracy,
            "test_accuracy": accuracy,
            "test_agreement": agreement,
        }

    def export(self, staging: Path, model: nn.Module, policy: Policy, metrics: dict[str, Any]) -> list[str]:
        from search_spaces.bundle import architecture, save_bundle

        task, export = self.ctx.task, self.ctx.spec.export
        example = self.ctx.example.cpu()
        with torch.no_grad():
            num_classes = int(model(example).shape[1])
        space = task.space
        gone = space.removed_groups(policy)  # inside removed blocks: gone with them
        arch = architecture(
            task.spec.model.source, num_classes=num_classes, in_channels=int(example.shape[1]),
            input_shape=tuple(example.shape[1:]),
            kept={n: k for n, k in space.kept(policy).items() if n not in gone},
            removed=space.removed_units(policy), kept_layers=space.kept_units(policy) if space.depth else None,
        )
        written = save_bundle(staging, model, arch=arch, policy=policy, metrics=metrics,
                              onnx="onnx" in export, torchscript="torchscript" in export)
        # a format the model cannot be exported to is reported, not silently dropped
        formats: list[str] = [f for f in export if f != "onnx" or written.get("model.onnx") == "onnx"]
        if "onnx" in export and "onnx" not in formats:
            metrics["export_errors"] = {"onnx": written.get("model.onnx")}
        return formats

    def verify(self, staging: Path, model: nn.Module, formats: list[str]) -> tuple[dict[str, float], float]:
        """Max abs difference of each exported program's outputs from the model's (on the CPU,
        where the exported programs are loaded)."""
        example = self.ctx.example.cpu()
        x = torch.cat([example, torch.randn_like(example)])
        model = model.cpu().eval()
        with torch.no_grad():
            want = model(x)
        diffs: dict[str, float] = {}
        if "torchscript" in formats:
            ts = torch.jit.load(str(staging / "model.ts"), map_location="cpu")
            diffs["torchscript"] = (ts(x) - want).abs().max().item()
        if "onnx" in formats:
            from workers.runtimes.onnx_runtime import session

            # in onnxruntime, as it deploys, at two batch sizes: the batch axis is dynamic
            sess = session(staging / "model.onnx", threads=1)
            name = sess.get_inputs()[0].name
            outs = [torch.as_tensor(sess.run(None, {name: b.numpy()})[0]) for b in (x, x[:1])]
            diffs["onnx"] = max((got - want[: len(got)]).abs().max().item() for got in outs)
        if "safetensors" in formats:
            from search_spaces.bundle import load_bundle

            rebuilt = load_bundle(staging).eval()
            with torch.no_grad():
                diffs["safetensors"] = (rebuilt(x) - want).abs().max().item()
        return diffs, self.kind.export_tolerance(want)
