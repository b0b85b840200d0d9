"""Model kinds: everything that differs between families of models lives in one kind's folder.

A kind (:class:`~workers.kinds.base.ModelKind`) knows how its task loads, its defaults, what a
spec may ask of it, how a policy is applied, recovered and scored, and how a candidate is
fine-tuned, tested, exported and verified. Generic code (``workers.task``, the
``Evaluator``, the finalize loop) asks :func:`kind_of` and never tests for a kind itself.

Built-in kinds: ``image`` (``workers/kinds/image/``: CNNs on image / signal datasets) and
``text`` (``workers/kinds/text/``: sentence embedders on text corpora). A new kind is a new
folder plus one registration (:data:`~workers.kinds.registry.KINDS`, or an ``autoprune.kinds``
entry point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from workers.kinds.registry import KINDS, kind_name_of, load_kind

if TYPE_CHECKING:
    from workers.kinds.base import ModelKind
    from workers.spec import JobSpec

__all__ = ["KINDS", "get_kind", "kind_of"]


def get_kind(name: str) -> ModelKind:
    """The registered kind ``name`` (an unknown name lists the valid ones)."""
    return cast("ModelKind", load_kind(name))


def kind_of(spec: JobSpec) -> ModelKind:
    """The kind of a job spec (:func:`workers.kinds.registry.kind_name_of` decides)."""
    return get_kind(kind_name_of(spec))
