"""Which channel counts does a runtime run fast? A conv pair Cin→w→Cin timed at several widths w.

Each width is exported to ONNX and run in ONNX Runtime (1 thread, full graph optimisation) and in
PyTorch eager, all widths and both runtimes round-robin; the fastest round of each (robust on a
shared machine) and the median are printed. On an AVX-512 CPU ONNX Runtime's NCHWc kernels block
channels by 16: multiples of 16 run on the fast path (docs/benchmarks.md, "Realized speed-up per
runtime").

    .venv/bin/python bench/ort_widths.py [--widths 32,33,36,40,47,48,49,56,64] [--rounds 60]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from workers.runtimes.onnx_runtime import file_run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="32,33,36,40,47,48,49,56,64")
    ap.add_argument("--channels", type=int, default=64, help="the pair's input and output channels")
    ap.add_argument("--size", type=int, default=16, help="feature map side")
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.randn(1, args.channels, args.size, args.size)
    runs: dict[tuple[str, int], Callable[[], object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in (int(v) for v in args.widths.split(",")):
            m = nn.Sequential(nn.Conv2d(args.channels, w, 3, padding=1), nn.ReLU(),
                              nn.Conv2d(w, args.channels, 3, padding=1)).eval()
            path = Path(tmp) / f"w{w}.onnx"
            torch.onnx.export(m, (x,), str(path), dynamo=False)
            runs[("onnxruntime", w)] = file_run(path, x, threads=1)
            runs[("torch", w)] = functools.partial(m, x)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for k, run in runs.items():
                t0 = time.perf_counter()
                for _ in range(5):
                    run()
                times[k].append((time.perf_counter() - t0) / 5 * 1e3)
    print("| width | onnxruntime ms, fastest (median) | torch eager ms, fastest (median) |")
    print("|---|---|---|")
    for w in sorted({w for _, w in runs}):
        o, t = times[("onnxruntime", w)], times[("torch", w)]
        print(f"| {w} | {min(o):.3f} ({statistics.median(o):.3f}) | {min(t):.3f} ({statistics.median(t):.3f}) |")


if __name__ == "__main__":
    main()
