"""The ``image`` kind: CNNs (zoo, torchvision, timm, plugins) on image and signal datasets.

Channels are pruned through Torch-Pruning's dependency graph (``search_spaces.prune``), recovered
by least squares or BatchNorm recalibration, scored by accuracy or agreement with the dense
model (or a metric plugin), and finalized with a one-shot or gradual (AGP) fine-tune.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from workers.kinds.base import FinalizeContext, ModelKind, ScoringContext, depth_units_error
from workers.kinds.image.units import UNIT_NOUN

if TYPE_CHECKING:
    import torch

    from workers.kinds.image.finalize import ImageFinalizer
    from workers.kinds.image.scoring import ImageScoring
    from workers.spec import JobSpec
    from workers.task_types import Task, WorkerSettings


class ImageKind(ModelKind):
    name = "image"
    model_noun = "an image model (CNN)"
    data_noun = "an image dataset"
    default_criterion = "l1"
    default_metric = "accuracy"
    # every Torch-Pruning importance of search_spaces.criteria; not 'activation' (text only)
    criteria: ClassVar[tuple[str, ...]] = ("l1", "l2", "fpgm", "bn_scale", "taylor", "random")
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "agreement")
    schedules: ClassVar[tuple[str, ...]] = ("oneshot", "agp")

    def accepts_metric(self, metric: str) -> bool:
        return metric in self.metrics or metric.startswith("entrypoint:")  # plugins take a val loader

    #: what ``search_space.depth`` removes in a CNN, for its error messages
    unit_noun = UNIT_NOUN

    def depth_errors(self, spec: JobSpec) -> list[tuple[str, str]]:
        from search_spaces.zoo import WITHOUT_DEPTH

        if spec.model.zoo in WITHOUT_DEPTH:
            return [("search_space.depth", depth_units_error(spec, self.unit_noun))]
        return []

    def load_task(self, spec: JobSpec, settings: WorkerSettings) -> Task:
        from workers.kinds.image.task import load_image_task

        return load_image_task(spec, settings, self.criterion(spec))

    def rebuild_task(self, spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any]) -> Task:
        from workers.kinds.image.task import rebuild_image_task

        return rebuild_image_task(spec, settings, shared, space, self.criterion(spec))

    def scoring(self, ctx: ScoringContext) -> ImageScoring:
        from workers.kinds.image.scoring import ImageScoring

        return ImageScoring(ctx)

    def finalizer(self, ctx: FinalizeContext) -> ImageFinalizer:
        from workers.kinds.image.finalize import ImageFinalizer

        return ImageFinalizer(self, ctx)

    def export_tolerance(self, reference: torch.Tensor) -> float:
        # logits are unbounded: relative to their scale (float32 kernels reorder sums differently
        # in TorchScript / ONNX, and the error grows with the magnitude of the outputs)
        return 1e-3 * max(1.0, reference.abs().max().item())
