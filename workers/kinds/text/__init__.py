"""The ``text`` kind: sentence embedders (BERT family) on text corpora.

Whole attention heads and MLP widths are pruned (``search_spaces.transformers``, imported only
by this kind), distilled to the dense model's embeddings and scored by ``embedding_cosine``
(with ranking fidelity beside it); a candidate is distilled longer at finalize and exported as
a sentence-embedder bundle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from workers.kinds.base import FinalizeContext, ModelKind, ScoringContext

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from workers.kinds.text.finalize import TextFinalizer
    from workers.kinds.text.scoring import TextScoring
    from workers.spec import JobSpec
    from workers.task_types import Task, WorkerSettings

#: Zoo models that are pretrained sentence embedders (no reference training).
ZOO_MODELS = ("all-minilm-l6-v2",)


class TextKind(ModelKind):
    name = "text"
    model_noun = "a sentence embedder"
    data_noun = "a text dataset"
    datasets: ClassVar[tuple[str, ...]] = ("docstrings", "text_lines")
    # RMS activation on calibration text × weight norm beats weight magnitude on these models
    default_criterion = "activation"
    default_metric = "embedding_cosine"
    criteria: ClassVar[tuple[str, ...]] = ("l1", "l2", "activation", "random")
    metrics: ClassVar[tuple[str, ...]] = ("embedding_cosine",)
    schedules: ClassVar[tuple[str, ...]] = ("oneshot",)
    schedule_advice = "gradual re-pruning is for CNNs; text models are pruned once and distilled"
    distils_layers = True
    # activations of a transformer's linears vary per token and sentence: quantized at run time
    quantization = "dynamic"

    def owns_model(self, source: str) -> bool:
        return source in ZOO_MODELS or source.startswith("hf:")

    def load_task(self, spec: JobSpec, settings: WorkerSettings) -> Task:
        from workers.kinds.text.task import load_text_task

        return load_text_task(spec, settings, self.criterion(spec))

    def rebuild_task(self, spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any]) -> Task:
        from workers.kinds.text.task import rebuild_text_task

        return rebuild_text_task(spec, settings, shared, space, self.criterion(spec))

    def scoring(self, ctx: ScoringContext) -> TextScoring:
        from workers.kinds.text.scoring import TextScoring

        return TextScoring(ctx)

    def finalizer(self, ctx: FinalizeContext) -> TextFinalizer:
        from workers.kinds.text.finalize import TextFinalizer

        return TextFinalizer(self, ctx)

    def export_onnx(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        from search_spaces.transformers.bundle import export_onnx

        export_onnx(model, example, path)

    def export_tolerance(self, reference: torch.Tensor) -> float:
        # embeddings are L2-normalised (every value within [-1, 1]): an absolute bound is already
        # relative to their scale, and tighter than the image kind's 1e-3 of the largest logit
        return 1e-4
