"""Loading a text task: a sentence embedder, its tokenized corpus, token-id example, the space.

A spec is a text task when its dataset is one of :attr:`workers.kinds.text.TextKind.datasets`.
The model is a zoo embedder (pretrained: ``all-minilm-l6-v2``) or ``hf:<directory or package>``;
``model.weights`` optionally replaces its weights (same architecture). The corpus is tokenized
with the model's own tokenizer to ``target.seq_len``; the latency example is one full-length
sequence of real tokens. The criterion is the kind's (``TextKind.criterion``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from search_spaces.space import SearchSpace
from workers.kinds.base import depth_units_error
from workers.kinds.batches import shuffled
from workers.kinds.text.scoring import calibration_text
from workers.spec import JobSpec
from workers.task_types import Task, WorkerSettings
from workers.weights import load_weights, resolve_weights

if TYPE_CHECKING:
    from search_spaces.datasets.text import TextCorpus
    from search_spaces.transformers.model import SentenceEmbedder


def build_embedder(spec: JobSpec, settings: WorkerSettings) -> SentenceEmbedder:
    """The job's embedder. A job's spec comes from a REST caller: an ``hf:`` source must be a
    model directory inside the operator's data roots (never an importable package name, which
    would run that package's code), and plugins must be registered (``trusted=False``)."""
    from search_spaces.transformers.model import is_transformer
    from search_spaces.zoo import build_model

    source = spec.model.source
    if source.startswith("hf:"):
        from search_spaces.datasets.local import confine

        try:
            source = f"hf:{confine(source[3:], settings.data_roots)}"
        except ValueError as exc:
            raise ValueError(f"model.zoo {source!r}: {str(exc).replace('dataset.path ', '')}") from None
    model = build_model(source, trusted=False)
    if not is_transformer(model):
        raise ValueError(
            f"dataset {spec.dataset.name!r} is text, but model {spec.model.source!r} is not a sentence "
            "embedder (use zoo 'all-minilm-l6-v2' or 'hf:<model directory>')"
        )
    return model.eval()


def _corpus_splits(spec: JobSpec, settings: WorkerSettings, model: SentenceEmbedder) -> Any:
    from search_spaces.data import load_dataset

    seq_len = spec.target.seq_len
    limit = int(getattr(model.backbone.config, "max_position_embeddings", seq_len))
    if seq_len > limit:
        raise ValueError(f"target.seq_len {seq_len} exceeds the model's maximum of {limit} positions")
    corpus = load_dataset(
        spec.dataset.name,
        path=spec.dataset.path,
        roots=settings.data_roots,
        seed=spec.seed,
        cache_dir=settings.cache_dir,
    )
    # a text dataset's loader returns a TextCorpus, not the DataSplits load_dataset is annotated with
    return cast("TextCorpus", corpus).tokenize(model.tokenizer(), seq_len)


def example_tokens(model: SentenceEmbedder, texts: list[str], seq_len: int) -> torch.Tensor:
    """``(1, seq_len)`` ids of real text, no padding: the sequence latency is measured on."""
    tok = model.tokenizer()
    joined = " ".join(texts[:400])
    ids = tok(joined, truncation=True, max_length=seq_len, return_tensors="pt")["input_ids"].long()
    if ids.shape[1] < seq_len:  # a tiny corpus: repeat it
        reps = -(-seq_len // ids.shape[1])
        ids = ids.repeat(1, reps)[:, :seq_len]
    return ids


def calibration_batches(spec: JobSpec, splits: Any) -> list[torch.Tensor]:
    """The evaluator's calibration text (same seed, order, size and trimming), as token ids."""
    ev = spec.evaluation
    loader = shuffled(splits.train, ev.batch_size, spec.seed)
    batches = [b[0] for b in itertools.islice(loader, ev.calibration_batches)]
    return calibration_text(batches, int(splits.pad_token_id))


def _space(spec: JobSpec, model: nn.Module, example: torch.Tensor, splits: Any, criterion: str) -> SearchSpace:
    from search_spaces.transformers.space import build_transformer_space

    s = spec.search_space
    space = build_transformer_space(
        model,
        example,
        max_ratio=s.max_ratio,
        round_to=s.round_to,
        ignore=list(s.ignore),
        criterion=criterion,
        precisions=tuple(s.precision),
        calibration=calibration_batches(spec, splits),
        depth=s.depth,
    )
    if s.depth and not space.units:  # every layer holds an ignored group
        raise ValueError("search_space.depth: "
                         + depth_units_error(spec, "encoder layer free of search_space.ignore's groups"))
    return space


def load_text_task(spec: JobSpec, settings: WorkerSettings, criterion: str) -> Task:
    model = build_embedder(spec, settings)
    info: dict[str, Any] = {"weights": "pretrained", "kind": "text"}
    if spec.model.weights is not None:
        path = resolve_weights(spec.model.weights, settings)
        loaded = load_weights(path, allow_pickle=False)
        if isinstance(loaded, nn.Module):
            raise ValueError("model.weights: a text model takes a state dict, not a pickled module")
        try:
            model.load_state_dict(loaded)
        except RuntimeError as exc:
            raise ValueError(f"model.weights do not fit {spec.model.source}: {exc}") from None
        info["weights"] = path.name
    splits = _corpus_splits(spec, settings, model)
    example = example_tokens(model, splits.texts["val"], spec.target.seq_len)
    space = _space(spec, model, example, splits, criterion)
    return Task(spec, model, splits, example, space, criterion, info)


def rebuild_text_task(
    spec: JobSpec, settings: WorkerSettings, state: dict[str, torch.Tensor], space: dict[str, Any], criterion: str
) -> Task:
    """The task inside a Ray actor: the embedder rebuilt from its source, the shared weights."""
    model = build_embedder(spec, settings)
    model.load_state_dict(state)
    splits = _corpus_splits(spec, settings, model)
    example = example_tokens(model, splits.texts["val"], spec.target.seq_len)
    return Task(spec, model.eval(), splits, example, SearchSpace.from_dict(space), criterion)
