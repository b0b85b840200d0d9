"""What finalize produces, for every model kind: the artifact record, its error, the progress
callback's type and the bundle-directory helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_spaces.space import Policy

ProgressFn = Callable[[dict[str, Any]], None]


class FinalizeError(RuntimeError):
    """Finalization could not produce a bundle (unwritable directory, export mismatch...)."""


@dataclass
class ArtifactInfo:
    """One accepted bundle: its rank, directory, files (name, size, sha256), final metrics, and
    the trial it came from (set by whoever knows the candidates' trials: the task process).

    The one shape of a finalize result from the worker to the database."""

    rank: int
    dir: Path
    files: list[tuple[str, int, str]]
    metrics: dict[str, Any]
    policy: Policy = field(default_factory=dict)
    trial_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dir"] = str(self.dir)
        return d


def check_writable(out_dir: Path) -> None:
    """Creates ``out_dir`` and checks a file can be written there, else a FinalizeError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FinalizeError(f"artifact directory {out_dir} is not writable: {exc}") from exc


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_files(bundle: Path) -> list[tuple[str, int, str]]:
    """(name, size, sha256) of each file of a bundle directory, by name."""
    return [(p.name, p.stat().st_size, sha256(p)) for p in sorted(bundle.iterdir()) if p.is_file()]


def cost_metrics(space: Any, macs: int, params: int, lat: Any) -> dict[str, Any]:
    """A finalized model's costs and its re-measured latency, as every artifact reports them."""
    return {
        "macs": macs,
        "params": params,
        "macs_ratio": macs / space.dense_macs,
        "params_ratio": params / space.dense_params,
        "latency_ms": lat.ms,
        "latency_spread_ms": lat.spread_ms,
        "latency_ratio": lat.ratio,
        "dense_latency_ms": lat.dense_ms,
    }
