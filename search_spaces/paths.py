"""Path confinement, written once: is a path (symlinks resolved) inside one of some roots?

Dataset paths, weights given as paths and artifact files all pass through :func:`inside`
(``search_spaces.datasets.local.confine`` adds the errors a job spec's field gets).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def inside(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The resolved ``path`` if it is one of ``roots`` or lies below one (symlinks resolved on
    both sides, so a link cannot lead out), else None."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        r = Path(root).expanduser().resolve()
        if resolved == r or r in resolved.parents:
            return resolved
    return None
