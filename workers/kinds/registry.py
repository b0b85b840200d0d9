"""The registry of model kinds, and the one decision of which kind a job spec is.

Built-ins by name, plus the ``autoprune.kinds`` entry-point group for an operator's own kinds
(as for models, datasets and metrics: :mod:`search_spaces.plugins`)::

    [project.entry-points."autoprune.kinds"]
    audio = "mypkg.kinds:AudioKind"   # a workers.kinds.base.ModelKind subclass (or instance)

Kinds are loaded from string targets, so this module imports none of them (nor the job spec,
which asks it at validation): the objects it returns are typed by :func:`workers.kinds.kind_of`.
"""

from __future__ import annotations

import functools
from typing import Any

from search_spaces.registry import Registry

KINDS = Registry(
    "model kind",
    {"image": "workers.kinds.image:ImageKind", "text": "workers.kinds.text:TextKind"},
    group="autoprune.kinds",
)

#: The kind of every dataset no other kind claims (the image datasets and dataset plugins).
DEFAULT_KIND = "image"


@functools.cache
def load_kind(name: str) -> Any:
    """The registered kind ``name``: one instance per process."""
    obj = KINDS.get(name)
    return obj() if isinstance(obj, type) else obj


def kind_name_of(spec: Any) -> str:
    """THE decision of a spec's (a ``JobSpec``'s) kind: the kind whose ``datasets`` hold the
    spec's dataset, else :data:`DEFAULT_KIND`. Nothing else decides it."""
    dataset = spec.dataset.name
    for name in KINDS.names():
        if name != DEFAULT_KIND and dataset in load_kind(name).datasets:
            return name
    return DEFAULT_KIND


def spec_errors(spec: Any) -> list[tuple[str, str]]:
    """``(field, message)`` for what the spec's kind cannot do: a model another kind owns, a
    metric of another kind, then the kind's own checks (criterion, finalize options)."""
    kind = load_kind(kind_name_of(spec))
    others = [load_kind(n) for n in KINDS.names() if n != kind.name]
    source, dataset, metric = spec.model.source, spec.dataset.name, spec.metric
    for other in others:
        if other.owns_model(source):
            return [("model", f"model {source!r} is {other.model_noun}: it needs {other.data_noun} "
                              f"({', '.join(other.datasets)})")]
    if not kind.accepts_metric(metric):
        # a metric of a kind that datasets decide (not the default kind): name those datasets
        owner = next((o for o in others if o.datasets and o.accepts_metric(metric)), None)
        if owner is not None:
            return [("metric", f"metric {metric!r} needs {owner.data_noun} ({', '.join(owner.datasets)}), "
                               f"not {dataset!r}")]
        return [("metric", f"dataset {dataset!r} is {kind.name}: use metric "
                           f"{' or '.join(repr(m) for m in kind.metrics)}")]
    errors: list[tuple[str, str]] = kind.spec_errors(spec)
    return errors
