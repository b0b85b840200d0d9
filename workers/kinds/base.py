"""The model-kind contract: one screen, each method saying when it is called.

A kind is one object (:class:`ModelKind`) that hands out two per-job helpers: a
:class:`PolicyScoring` (the kind's part of an ``Evaluator``: apply a policy, recover, score) and
a :class:`CandidateFinalizer` (its part of the finalize loop: fine-tune, test, export, verify).
Generic code owns the rest once: costs, latency, locking, candidates, staging and publishing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search_spaces.space import Policy
    from workers.artifacts import ProgressFn
    from workers.spec import FinalizeSpec, JobSpec
    from workers.task_types import Task, WorkerSettings

QualityFn = Callable[["nn.Module"], float]


@dataclass
class ScoringContext:
    """What the generic ``Evaluator`` prepared for the kind: the dense model and example input
    on the evaluation device."""

    task: Task
    dense: nn.Module
    device: torch.device
    example: torch.Tensor


class PolicyScoring(ABC):
    """The kind's part of an ``Evaluator`` (one per evaluator; built by :meth:`ModelKind.scoring`)."""

    #: Kind-specific figures of the last ``quality`` call, added to ``Metrics.extra``.
    last_extra: dict[str, Any]

    def quantization_batches(self) -> list[torch.Tensor]:
        """Inputs that calibrate a static int8 quantization (training batches; none for a kind
        quantized dynamically)."""
        return []

    @abstractmethod
    def metric(self, name: str) -> QualityFn:
        """Once per evaluator: the quality function of the spec's metric (higher is better)."""

    @abstractmethod
    def apply(self, policy: Policy) -> nn.Module:
        """The policy applied to a copy of the dense model, nothing recovered (costs, latency)."""

    @abstractmethod
    def prune(self, policy: Policy, *, steps: int | None = None,
              on_step: Callable[[int], None] | None = None) -> nn.Module:
        """Per evaluation: applied, recovered, and fine-tuned or distilled for ``steps`` (the
        spec's ``evaluation.finetune_steps`` when None); in eval mode."""


@dataclass
class FinalizeContext:
    """What the generic finalize loop hands the kind's finalizer."""

    task: Task
    scoring: PolicyScoring
    device: torch.device
    example: torch.Tensor
    spec: FinalizeSpec
    on_progress: ProgressFn
    quality: QualityFn  #: the spec's metric on the validation split (the evaluator's)


class CandidateFinalizer(ABC):
    """The kind's part of finalize (one per finalize call; built by :meth:`ModelKind.finalizer`)."""

    @abstractmethod
    def fine_tuned(self, rank: int, policy: Policy) -> nn.Module:
        """Per candidate, first: pruned and fine-tuned (or distilled), on the evaluation device."""

    def fine_tune_notes(self, rank: int) -> dict[str, Any]:
        """What fine-tuning candidate ``rank`` decided beyond its weights, for its metrics."""
        return {}

    @abstractmethod
    def tested(self, model: nn.Module) -> dict[str, Any]:
        """Per candidate: quality on the test split. ``test_quality`` is the headline figure (the
        spec's metric, on the test split) and ``dense_test_quality`` the dense model's, so a
        report compares the best found, the baseline and the dense model whatever the kind."""

    @abstractmethod
    def export(self, staging: Path, model: nn.Module, policy: Policy, metrics: dict[str, Any]) -> list[str]:
        """Writes the bundle (the model on the CPU) to ``staging``; returns the formats written
        (a requested format that could not be written goes to ``metrics["export_errors"]``)."""

    @abstractmethod
    def verify(self, staging: Path, model: nn.Module, formats: list[str]) -> tuple[dict[str, float], float]:
        """Each written format's largest output difference from ``model``, and the tolerance."""


def _int8_errors(spec: JobSpec) -> list[tuple[str, str]]:
    """What an int8 search needs: the quantized file is made, scored and timed by onnxruntime."""
    field = "search_space.precision"
    if spec.target.runtime != "onnxruntime":
        return [(field, f"int8 is searched in onnxruntime's quantized files: set target.runtime "
                        f"to 'onnxruntime' (got {spec.target.runtime!r})")]
    if spec.target.device != "cpu":
        return [(field, "int8 is searched on the CPU (onnxruntime's int8 kernels); set target.device 'cpu'")]
    if "onnx" not in spec.finalize.export:
        return [(field, "int8 ships as a quantized model.onnx: add 'onnx' to finalize.export")]
    return []


class ModelKind(ABC):
    """One family of models (registered in :mod:`workers.kinds.registry`)."""

    name: ClassVar[str]
    model_noun: ClassVar[str]  #: "a sentence embedder": what error messages call its models
    data_noun: ClassVar[str]  #: "a text dataset"
    datasets: ClassVar[tuple[str, ...]] = ()  #: datasets that make a spec this kind
    default_criterion: ClassVar[str]  #: when a spec names none (the one place it is decided)
    default_metric: ClassVar[str]
    criteria: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    schedules: ClassVar[tuple[str, ...]]  #: the finalize schedules it implements
    schedule_advice: ClassVar[str] = ""  #: why the others are not, for the error message
    distils_layers: ClassVar[bool] = False  #: finalize.distil_layers applies (layer-wise distillation)
    #: how onnxruntime quantizes its int8 groups: "static" (calibrated QDQ) or "dynamic"
    quantization: ClassVar[Literal["static", "dynamic"]] = "static"

    # --- at submit: spec validation (must import nothing heavy) ------------------------------
    def owns_model(self, source: str) -> bool:
        """Whether a model source can only be this kind's (a spec of another kind is refused)."""
        return False

    def accepts_metric(self, metric: str) -> bool:
        return metric in self.metrics

    def spec_errors(self, spec: JobSpec) -> list[tuple[str, str]]:
        """``(field, message)`` for each option of ``spec`` this kind cannot use."""
        errors = []
        criterion = spec.search_space.criterion
        if criterion is not None and criterion not in self.criteria:
            errors.append(("search_space.criterion",
                           f"criterion {criterion!r} does not apply to {self.model_noun}; "
                           f"valid: {', '.join(self.criteria)}"))
        if "int8" in spec.search_space.precision:
            errors += _int8_errors(spec)
        if spec.search_space.depth:
            errors += self.depth_errors(spec)
        if spec.finalize.distil_layers > 0 and not self.distils_layers:
            errors.append(("finalize.distil_layers", "finalize.distil_layers: layer-wise distillation is for "
                                                     f"sentence embedders, not {self.model_noun}"))
        if spec.finalize.schedule not in self.schedules:
            why = f" ({self.schedule_advice})" if self.schedule_advice else ""
            errors.append(("finalize.schedule", f"finalize.schedule: {spec.finalize.schedule!r} is not "
                                                f"implemented for {self.model_noun}{why}; use "
                                                f"{' or '.join(repr(s) for s in self.schedules)}"))
        return errors

    def depth_errors(self, spec: JobSpec) -> list[tuple[str, str]]:
        """``search_space.depth`` asked of a model known (without building it) to have no unit
        to remove; a model known only once built is checked when its task loads
        (:func:`depth_units_error`)."""
        return []

    def criterion(self, spec: JobSpec) -> str:
        return spec.search_space.criterion or self.default_criterion

    # --- in the process that loads the job's task (once per job), and in each Ray actor -------
    @abstractmethod
    def load_task(self, spec: JobSpec, settings: WorkerSettings) -> Task:
        """The dense model, its data splits, an example input and the built search space."""

    @abstractmethod
    def rebuild_task(self, spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any]) -> Task:
        """The task again in a Ray actor, from the dense weights ``load_task`` shared and the
        built space's dict (the expensive parts are not repeated)."""

    # --- per evaluator, and per finalize call ---------------------------------------------------
    @abstractmethod
    def scoring(self, ctx: ScoringContext) -> PolicyScoring:
        """The kind's evaluation part for one ``Evaluator``."""

    @abstractmethod
    def finalizer(self, ctx: FinalizeContext) -> CandidateFinalizer:
        """The kind's finalize part for one finalize call."""

    def export_onnx(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        """Writes ``model`` as the ``model.onnx`` its bundles publish (batch axis dynamic): the
        file an ONNX runtime times, so that what is measured is what ships."""
        from search_spaces.bundle import export_onnx

        export_onnx(model, example, path)

    @abstractmethod
    def export_tolerance(self, reference: torch.Tensor) -> float:
        """The largest accepted difference of an exported program's outputs from the model's
        (``reference``: the model's outputs on the verification inputs)."""


def depth_units_error(spec: JobSpec, unit_noun: str) -> str:
    """The message of a depth search over a model that has no ``unit_noun`` to remove."""
    return (f"model {spec.model.source!r} has no {unit_noun} that can be removed whole, so there is "
            f"no depth to search; set search_space.depth to false")
