"""Plugin registries: the models, datasets and metrics that are not built in.

Only the operator adds them. An installed package declares entry points, as for pytest or Ray::

    [project.entry-points."autoprune.models"]
    mynet = "mypkg.models:build"    # build(num_classes=, in_channels=) -> nn.Module (the kwargs it takes)
    [project.entry-points."autoprune.datasets"]
    mydata = "mypkg.data:load"      # load(seed=, path=) -> search_spaces.datasets.common.DataSplits
    [project.entry-points."autoprune.metrics"]
    f1 = "mypkg.metrics:f1"         # f1(model, val_loader) -> float, higher is better

Code that is not packaged is allowed by target or module prefix
(:func:`search_spaces.registry.allow_plugins`; the service reads ``AUTOPRUNE_PLUGINS``). A job
spec names a plugin with ``entrypoint``: ``model: {entrypoint: mynet}``,
``dataset: {name: "entrypoint:mydata"}``, ``metric: "entrypoint:f1"`` (or the allowed
``module:function`` in place of the name).
"""

from __future__ import annotations

from search_spaces.registry import Registry

#: What a job spec writes before a dataset's or metric's plugin reference.
PREFIX = "entrypoint:"

MODEL_PLUGINS = Registry("model plugin", {}, group="autoprune.models")
DATASET_PLUGINS = Registry("dataset plugin", {}, group="autoprune.datasets")
METRIC_PLUGINS = Registry("metric plugin", {}, group="autoprune.metrics")


def listing() -> dict[str, list[str]]:
    """What a job spec may name, per kind (nothing imported): for ``autoprune plugins``."""
    return {
        "models": MODEL_PLUGINS.choices(),
        "datasets": DATASET_PLUGINS.choices(),
        "metrics": METRIC_PLUGINS.choices(),
    }
