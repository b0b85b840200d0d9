"""The job spec: everything a compression job needs, validated at the edge.

The service accepts it as JSON (REST) or JSON/YAML (CLI); workers read it to build the model,
data, evaluator and agent. Unknown fields are rejected, and every error names its field.

Code a spec names (``model.entrypoint``, ``dataset.name: entrypoint:…``, ``metric:
entrypoint:…``) must be a plugin the operator registered (:mod:`search_spaces.plugins`: installed
entry points, and this process's allowlist); validation checks names and imports nothing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agents.registry import AGENTS
from search_spaces.criteria import CRITERIA
from search_spaces.data import DATASETS
from search_spaces.plugins import DATASET_PLUGINS, METRIC_PLUGINS, MODEL_PLUGINS, PREFIX
from search_spaces.registry import NotRegisteredError, Registry
from search_spaces.zoo import ZOO, check_hub_source, pretrained_weights_name
from workers.kinds.registry import spec_errors
from workers.runtimes import DEFAULT_RUNTIME, RUNTIMES

#: Metrics the evaluator computes itself; others are plugins (``entrypoint:<name>``). Which
#: ones a job may use is its model kind's to say (:mod:`workers.kinds`).
BUILTIN_METRICS = ("accuracy", "agreement", "embedding_cosine")

#: The error type of an option the spec's model kind cannot use; its ``ctx["field"]`` is the
#: dotted field (``search_space.criterion``), which the API puts in the 422's ``loc``.
KIND_ERROR = "model_kind"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Spec):
    zoo: str | None = Field(
        None,
        description="built-in model name, 'torchvision:<name>' or 'timm:<name>' (random weights, "
        "never downloaded), or 'hf:<model directory or package>' (a BERT-family sentence embedder)",
    )
    entrypoint: str | None = Field(
        None,
        description="a model plugin the operator registered: an 'autoprune.models' entry-point name, "
        "or a 'pkg.module:function' on the operator's allowlist; returns an nn.Module",
    )
    weights: str | None = Field(None, description="an upload id (POST /uploads) or a file path")
    num_classes: int | None = Field(None, ge=1, le=100_000)
    in_channels: int | None = Field(None, ge=1, le=64)
    input_shape: list[int] | None = Field(None, min_length=1, max_length=4)

    @field_validator("zoo")
    @classmethod
    def _known_zoo(cls, v: str | None) -> str | None:
        if v is None or v in ZOO:
            return v
        if v.startswith("hf:") and len(v) > 3:
            return v  # a local directory (confined to the data roots when a job loads it) or package
        if ":" not in v or v.partition(":")[0] not in ("torchvision", "timm"):
            raise ValueError(
                f"unknown zoo model {v!r}; valid: {', '.join(ZOO.names())}, 'torchvision:<name>', "
                "'timm:<name>', 'hf:<model directory or package>' (plugins go in model.entrypoint)"
            )
        check_hub_source(v)
        return v

    @field_validator("entrypoint")
    @classmethod
    def _registered(cls, v: str | None) -> str | None:
        # nothing is imported here: only registered names and the operator's allowlist pass
        return None if v is None else MODEL_PLUGINS.check(v)

    @field_validator("weights")
    @classmethod
    def _not_a_download(cls, v: str | None, info: ValidationInfo) -> str | None:
        zoo = info.data.get("zoo")
        if v is not None and zoo and ":" in zoo and pretrained_weights_name(v):
            raise ValueError(
                f"{v!r} names {zoo.partition(':')[0]}'s pretrained weights, which would need a "
                "download; autoprune never downloads weights: save them as a state dict (safetensors) "
                "where there is network, upload it (POST /uploads) and give its id"
            )
        return v

    @property
    def source(self) -> str:
        """The model source string every loader and bundle uses: the zoo / hub name, or
        ``entrypoint:<plugin>``."""
        return self.zoo if self.zoo is not None else f"entrypoint:{self.entrypoint}"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.zoo is None) == (self.entrypoint is None):
            raise ValueError("give exactly one of 'zoo' or 'entrypoint'")
        if self.input_shape is not None and any(d < 1 or d > 4096 for d in self.input_shape):
            raise ValueError("input_shape dimensions must be between 1 and 4096")
        return self


def _plugin_ref(v: str, registry: Registry, builtins: list[str]) -> str:
    """``entrypoint:<ref>`` checked against ``registry``; the error lists both kinds of names."""
    try:
        registry.check(v[len(PREFIX):])
    except NotRegisteredError as exc:
        plugins = ", ".join(PREFIX + c for c in exc.choices) or "none"
        raise ValueError(
            f"{v!r} is not a registered {registry.kind}; built-in: {', '.join(builtins)}; "
            f"plugins: {plugins} (the operator registers plugins: an {registry.group!r} entry point "
            "in an installed package, or the AUTOPRUNE_PLUGINS allowlist)"
        ) from None
    return v


class DatasetSpec(_Spec):
    name: str = Field(
        "digits",
        description="a built-in dataset, or a plugin the operator registered: 'entrypoint:<name>'",
    )
    path: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v in DATASETS:
            return v
        if v.startswith(PREFIX):
            return _plugin_ref(v, DATASET_PLUGINS, DATASETS.names())
        plugins = ", ".join(PREFIX + c for c in DATASET_PLUGINS.choices()) or "none"
        raise ValueError(f"unknown dataset {v!r}; valid: {', '.join(DATASETS.names())}; plugins: {plugins}")


class BudgetSpec(_Spec):
    macs_ratio: float | None = Field(None, gt=0, le=1)
    params_ratio: float | None = Field(None, gt=0, le=1)
    latency_ms: float | None = Field(None, gt=0, le=1e6)
    latency_ratio: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _finite_and_set(self) -> BudgetSpec:
        values = self.model_dump(exclude_none=True)
        if not values:
            raise ValueError(
                "set at least one of macs_ratio, params_ratio, latency_ms, latency_ratio"
            )
        for k, v in values.items():
            if math.isnan(v) or math.isinf(v):
                raise ValueError(f"{k} must be a finite number")
        return self


class TargetSpec(_Spec):
    device: Literal["cpu", "cuda"] = "cpu"
    runtime: str = Field(
        DEFAULT_RUNTIME,
        description="where latency is measured, as the model ships: 'onnxruntime' (the exported "
        "model.onnx; the default) or 'torch' (PyTorch eager), or a runtime plugin the operator "
        "registered (an 'autoprune.runtimes' entry point)",
    )
    batch_size: int = Field(1, ge=1, le=1024)
    threads: int = Field(1, ge=1, le=256)
    seq_len: int = Field(
        128,
        ge=1,
        le=8192,
        description="text models: token sequence length for latency and MACs, and the "
        "tokenizer's maximum length (ignored for other models)",
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources evaluators must run on (pins latency to those nodes)",
    )

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; valid: {', '.join(RUNTIMES.names())}")
        return v

    @field_validator("resources")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name or not math.isfinite(amount) or amount <= 0:
                raise ValueError(f"resource {name!r} needs a positive finite amount, got {amount!r}")
        return v


class AgentSpec(_Spec):
    kind: str = "ddpg"
    trials: int = Field(100, ge=1, le=20_000)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in AGENTS:
            raise ValueError(f"unknown agent {v!r}; valid: {', '.join(AGENTS.names())}")
        return v


Precision = Literal["fp32", "int8"]


class SearchSpaceSpec(_Spec):
    criterion: str | None = Field(
        None,
        description="channel importance (see search_spaces.criteria); each model kind accepts "
        "some and has its default: 'l1' for image models, 'activation' for text models",
    )
    max_ratio: float = Field(0.8, ge=0.0, lt=1.0)
    round_to: int | Literal["auto", "runtime"] = Field(
        "auto",
        description=(
            "kept channels are a multiple of this; 'auto' scales the step with the group's width "
            "(width // 16 rounded down to a power of two: 16 channels move by 1, 64 by 4); "
            "'runtime' is 'auto' never finer than the multiple the job's runtime runs fastest, "
            "measured on the target when the task loads: every prunable group at a multiple of 16 "
            "plus 0, 1, 4, 8 and 16 channels, timed interleaved in target.runtime, and the finest of "
            "the steps 1, 4, 8, 16 whose widths cost no more than their channels' share of the "
            "time (a runtime that pads widths to blocks of 8 makes 8 the step). It costs a few "
            "exports and seconds per job (docs/benchmarks.md, 'Widths the runtime runs fast')"
        ),
    )
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")
    precision: list[Precision] = Field(
        default_factory=lambda: list[Precision](["fp32"]),
        description=(
            "what each group may run in, searched beside its width: ['fp32'] (widths only, the "
            "default) or ['fp32', 'int8'] (per group, its conv/linear layers in int8 by "
            "onnxruntime's quantization: static QDQ with per-channel weights calibrated on "
            "training batches for image models, dynamic int8 for text models); quality and "
            "latency are measured on the quantized ONNX file. Needs target.runtime 'onnxruntime' "
            "on the CPU and 'onnx' in finalize.export"
        ),
    )

    depth: bool = Field(
        False,
        description=(
            "also search depth: whether each removable unit is kept or removed whole, beside its "
            "width (and precision). Image models: each residual block whose output is its input "
            "plus a branch of the same shape (an identity shortcut: resnet20/56, resnet1d20, "
            "mobilenetv2's inverted residuals); text models: each encoder layer (attention and "
            "MLP; the hidden states pass on). A policy marks a removed unit '<unit>@keep': 0. A "
            "model with no such unit (vgg16_bn, a plain CNN) is refused"
        ),
    )

    @field_validator("precision")
    @classmethod
    def _precisions(cls, v: list[str]) -> list[str]:
        if "fp32" not in v:
            raise ValueError("precision must include 'fp32' (the baselines and every group's "
                             "default), e.g. ['fp32', 'int8']")
        if len(set(v)) != len(v):
            raise ValueError(f"precision lists a precision twice: {v}")
        return v

    @field_validator("round_to")
    @classmethod
    def _round_to(cls, v: int | str) -> int | str:
        if v not in ("auto", "runtime") and not 1 <= int(v) <= 256:
            raise ValueError("round_to must be 'auto', 'runtime' or an integer between 1 and 256")
        return v

    @field_validator("criterion")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; valid: {', '.join(CRITERIA.names())}")
        return v


Recovery = Literal["auto", "none", "bn", "lsq", "finetune"]

class EvaluationSpec(_Spec):
    recovery: Recovery = Field(
        "auto",
        description=(
            "how a pruned candidate is repaired before it is scored: 'none'; 'bn' (BatchNorm "
            "recalibration on the calibration batches); 'lsq' (least-squares refit of the layers "
            "reading pruned channels to the dense model's outputs, then BN recalibration); "
            "'finetune' (BN recalibration, then finetune_steps of SGD); 'auto' (default): "
            "'finetune' if finetune_steps > 0, else 'lsq' (docs/benchmarks.md, 'Proxy study')"
        ),
    )
    calibration_batches: int = Field(
        2,
        ge=0,
        le=1000,
        description="training batches (of batch_size) for reconstruction and BN recalibration",
    )
    finetune_steps: int = Field(
        0,
        ge=0,
        le=100_000,
        description="SGD steps on each pruned candidate after its recovery, before it is scored",
    )
    val_samples: int | None = Field(None, ge=1, le=10_000_000)
    batch_size: int = Field(128, ge=1, le=4096)

    @model_validator(mode="after")
    def _steps_for_finetune(self) -> EvaluationSpec:
        if self.recovery == "finetune" and self.finetune_steps == 0:
            raise ValueError("recovery 'finetune' needs finetune_steps > 0 (try 20)")
        return self

    def resolved_recovery(self) -> str:
        """The recovery ``auto`` stands for: ``finetune`` when the spec sets ``finetune_steps``,
        else ``lsq``, at every budget.

        The proxy study (docs/benchmarks.md, "The truth a job delivers") against the truth a job
        delivers — the same fine-tune from the recovered network, as ``finalize`` runs it — found
        ``lsq`` ranking policies better than BN recalibration in three of its four cells (in the
        fourth neither ranks), and its start ending higher after that fine-tune; BN alone scores
        deep cuts near chance. It costs somewhat more than BN recalibration (figures there).
        """
        if self.recovery != "auto":
            return self.recovery
        return "finetune" if self.finetune_steps > 0 else "lsq"


ExportFormat = Literal["torchscript", "onnx", "safetensors"]


class FinalizeSpec(_Spec):
    top_k: int = Field(3, ge=0, le=50)
    baseline: bool = Field(
        False,
        description=(
            "also fine-tune the uniform-fill baseline (an extra artifact when it is not among the "
            "top_k), so the search's best can be compared with it after the same fine-tune"
        ),
    )
    finetune_epochs: float = Field(1.0, ge=0, le=1000)
    distil_layers: float = Field(
        0.0,
        ge=0,
        le=100,
        description="sentence embedders: weight of layer-wise distillation, the hidden states "
        "entering each kept encoder layer pulled toward those entering the same layer of the "
        "dense model (TinyBERT-style), beside the final embedding; 0 (default): the final "
        "embedding only",
    )
    schedule: Literal["oneshot", "agp"] = "oneshot"
    export: list[ExportFormat] = Field(
        default_factory=lambda: list[ExportFormat](["torchscript", "onnx", "safetensors"])
    )
    latency_tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="a latency budget is met when the delivered file, measured in the job's "
        "runtime, is within budget × (1 + latency_tolerance) plus the measurement's spread",
    )
    tighten: int = Field(
        4,
        ge=0,
        le=20,
        description="how many other widths finalize measures for a candidate whose "
        "architecture is over the latency budget (narrower ones; a baseline is placed at the "
        "best found's latency, narrower or wider, so it is compared at equal cost), before "
        "fine-tuning the one that meets it",
    )


class JobSpec(_Spec):
    name: str = Field("job", max_length=200)
    model: ModelSpec
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    metric: str = Field(
        "accuracy",
        description="'accuracy', 'agreement' (with the dense model) or a registered plugin 'entrypoint:<name>'",
    )
    budget: BudgetSpec
    target: TargetSpec = Field(default_factory=TargetSpec)
    agent: AgentSpec = Field(default_factory=AgentSpec)
    search_space: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    finalize: FinalizeSpec = Field(default_factory=FinalizeSpec)
    workers: int = Field(
        1, ge=0, le=256, description="Ray evaluator actors; 0 evaluates in-process"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v in BUILTIN_METRICS:
            return v
        if v.startswith(PREFIX):
            return _plugin_ref(v, METRIC_PLUGINS, list(BUILTIN_METRICS))
        plugins = ", ".join(PREFIX + c for c in METRIC_PLUGINS.choices()) or "none"
        raise ValueError(f"metric must be one of {', '.join(BUILTIN_METRICS)}; plugins: {plugins}")

    @model_validator(mode="after")
    def _fits_the_model_kind(self) -> JobSpec:
        """The spec's model kind (:mod:`workers.kinds`) accepts its model, metric, criterion and
        finalize options: refused at submit, naming the field, not failed mid-job."""
        errors = spec_errors(self)
        if errors:
            field, message = errors[0]
            raise PydanticCustomError(KIND_ERROR, "{message}", {"field": field, "message": message})
        return self
