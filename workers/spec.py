"""The job spec: everything a compression job needs, validated at the edge.

The service accepts it as JSON (REST) or JSON/YAML (CLI); workers read it to build the model,
data, evaluator and agent. Unknown fields are rejected, and every error names its field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.registry import AGENTS
from search_spaces.criteria import CRITERIA
from search_spaces.data import DATASETS, TEXT_DATASETS
from search_spaces.zoo import ZOO, is_text_model


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Spec):
    zoo: str | None = Field(
        None,
        description="built-in model name, 'torchvision:<name>', 'timm:<name>' or "
        "'hf:<model directory or package>' (a BERT-family sentence embedder)",
    )
    entrypoint: str | None = Field(None, description="'pkg.module:function' returning an nn.Module")
    weights: str | None = Field(None, description="an upload id (POST /uploads) or a file path")
    num_classes: int | None = Field(None, ge=1, le=100_000)
    in_channels: int | None = Field(None, ge=1, le=64)
    input_shape: list[int] | None = Field(None, min_length=1, max_length=4)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.zoo is None) == (self.entrypoint is None):
            raise ValueError("give exactly one of 'zoo' or 'entrypoint'")
        if self.zoo is not None and ":" not in self.zoo and self.zoo not in ZOO:
            raise ValueError(f"unknown zoo model {self.zoo!r}; valid: {', '.join(ZOO.names())}")
        if self.entrypoint is not None and ":" not in self.entrypoint:
            raise ValueError("entrypoint must look like 'pkg.module:function'")
        if self.input_shape is not None and any(d < 1 or d > 4096 for d in self.input_shape):
            raise ValueError("input_shape dimensions must be between 1 and 4096")
        return self


class DatasetSpec(_Spec):
    name: str = "digits"
    path: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if not v.startswith("entrypoint:") and v not in DATASETS:
            raise ValueError(
                f"unknown dataset {v!r}; valid: {', '.join(DATASETS.names())}, entrypoint:pkg.mod:fn"
            )
        return v


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


class SearchSpaceSpec(_Spec):
    criterion: str | None = Field(
        None,
        description="channel importance (see search_spaces.criteria); default 'l1', or "
        "'activation' for text models",
    )
    max_ratio: float = Field(0.8, ge=0.0, lt=1.0)
    round_to: int = Field(8, ge=1, le=256)
    ignore: list[str] = Field(default_factory=list, description="module names never pruned")

    @field_validator("criterion")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; valid: {', '.join(CRITERIA.names())}")
        return v


class EvaluationSpec(_Spec):
    calibration_batches: int = Field(8, ge=0, le=1000)
    finetune_steps: int = Field(
        0,
        ge=0,
        le=100_000,
        description="SGD steps on each pruned candidate before it is scored (try 20 for deep cuts)",
    )
    val_samples: int | None = Field(None, ge=1, le=10_000_000)
    batch_size: int = Field(128, ge=1, le=4096)


ExportFormat = Literal["torchscript", "onnx", "safetensors"]


class FinalizeSpec(_Spec):
    top_k: int = Field(3, ge=0, le=50)
    finetune_epochs: float = Field(1.0, ge=0, le=1000)
    schedule: Literal["oneshot", "agp"] = "oneshot"
    export: list[ExportFormat] = Field(
        default_factory=lambda: list[ExportFormat](["torchscript", "onnx", "safetensors"])
    )


class JobSpec(_Spec):
    name: str = Field("job", max_length=200)
    model: ModelSpec
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    metric: str = "accuracy"
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
        if v not in ("accuracy", "agreement", "embedding_cosine") and not (
            v.startswith("entrypoint:") and ":" in v[11:]
        ):
            raise ValueError(
                "metric must be 'accuracy', 'agreement', 'embedding_cosine' or "
                "'entrypoint:pkg.mod:fn'"
            )
        return v

    @model_validator(mode="after")
    def _text_metric(self) -> JobSpec:
        text = self.dataset.name in TEXT_DATASETS
        if self.model.zoo is not None and is_text_model(self.model.zoo) and not text:
            raise ValueError(
                f"model {self.model.zoo!r} is a sentence embedder: it needs a text dataset "
                f"({', '.join(TEXT_DATASETS)})"
            )
        if self.metric == "embedding_cosine" and not text:
            raise ValueError(
                f"metric 'embedding_cosine' needs a text dataset ({', '.join(TEXT_DATASETS)}), "
                f"not {self.dataset.name!r}"
            )
        if text and self.metric != "embedding_cosine":
            raise ValueError(
                f"dataset {self.dataset.name!r} is text: use metric 'embedding_cosine'"
            )
        return self
