"""An installed-looking plugin package, written to a temporary folder put on ``sys.path``.

``importlib.metadata`` finds a ``*.dist-info`` folder there exactly as it finds one that pip
installed into site-packages, so the entry points below are real entry points:

* ``autoprune.models``: ``quadnet`` (two convs named ``stem`` and ``body``);
* ``autoprune.datasets``: ``four_digits`` (scikit-learn's 8x8 digits 0-3: four classes);
* ``autoprune.metrics``: ``counted_accuracy`` (accuracy; appends a line to ``$PLUGIN_CALLS``).

Importing the package appends ``imported`` to ``$PLUGIN_CALLS`` too, so a test can tell whether
it was ever imported, as can a module that must never be (:func:`write_tripwire`).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

MODULE = "autoprune_testplug"

_DIST_INFO = {
    "METADATA": "Metadata-Version: 2.1\nName: autoprune-testplug\nVersion: 0.1\n",
    "entry_points.txt": textwrap.dedent(f"""\
        [autoprune.models]
        quadnet = {MODULE}:build_quadnet

        [autoprune.datasets]
        four_digits = {MODULE}:load_four_digits

        [autoprune.metrics]
        counted_accuracy = {MODULE}:counted_accuracy
        """),
}

_SOURCE = textwrap.dedent('''\
    """autoprune test plugins: a model, a dataset and a metric."""
    import os

    import numpy as np
    import torch
    from torch import nn

    def _note(what):
        path = os.environ.get("PLUGIN_CALLS")
        if path:
            with open(path, "a") as fh:
                fh.write(what + "\\n")

    _note("imported")

    class QuadNet(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm2d(16)
            self.body = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.body_bn = nn.BatchNorm2d(16)
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            x = torch.relu(self.stem_bn(self.stem(x)))
            x = torch.relu(self.body_bn(self.body(x)))
            return self.head(x.mean((2, 3)))

    def build_quadnet(num_classes=10, in_channels=1):
        torch.manual_seed(0)
        return QuadNet(num_classes, in_channels)

    def load_four_digits(*, seed=0, path=None, **_):
        from sklearn.datasets import load_digits

        from search_spaces.datasets.common import split_arrays, standardize

        data = load_digits()
        keep = data.target < 4
        x = standardize(data.images[keep][:, None].astype(np.float32), data.images[keep].astype(np.float32))
        return split_arrays(x, data.target[keep], seed=seed, name="four_digits")

    def counted_accuracy(model, loader):
        _note("metric")
        right = total = 0
        with torch.no_grad():
            for x, y in loader:
                right += int((model(x).argmax(1) == y).sum())
                total += len(y)
        return right / max(total, 1)
    ''')


def write_plugin_dist(root: Path) -> Path:
    """Writes the dist-info and the package under ``root``; returns ``root`` (for ``sys.path``)."""
    info = root / "autoprune_testplug-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    for name, text in _DIST_INFO.items():
        (info / name).write_text(text)
    (root / MODULE).mkdir(exist_ok=True)
    (root / MODULE / "__init__.py").write_text(_SOURCE)
    return root


def write_tripwire(root: Path, module: str, marker: Path) -> None:
    """A module ``module`` under ``root`` that creates ``marker`` when imported (it must never be)
    and has callables a spec could name: ``build``, ``load``, ``metric``."""
    (root / f"{module}.py").write_text(textwrap.dedent(f'''\
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")

        def build(**_):
            Path({str(marker)!r}).write_text("called")

        load = metric = build
        '''))


def forget(*modules: str) -> None:
    """Drops ``modules`` from ``sys.modules`` so the next test sees them unimported."""
    for name in modules:
        sys.modules.pop(name, None)
