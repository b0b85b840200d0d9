"""What per-layer int8 buys in ONNX Runtime: fp32 vs all layers int8 vs half of them int8.

For each model the exported fp32 file is quantized by :func:`search_spaces.quantize.quantize_onnx`
(CNNs: static QDQ, per-channel, calibrated on random batches; text: dynamic) and the files
(half: the first half of the layers in graph order, one fp32/int8 boundary; or every other
layer, a boundary at each layer) are compared: size, agreement with fp32 on held-out inputs (max abs diff, mean cosine, top-1
agreement for classifiers) and latency in onnxruntime at batch 1, 1 thread, all files timed
round-robin (``time_interleaved``, the fastest of 3 calls per round, the median over rounds).
``resnet56@0.5`` is resnet56 pruned uniformly by half (the narrow layers the issue asks about).

    .venv/bin/python bench/quantize_layers.py [--models resnet56,resnet56@0.5,minilm] [--rounds 30]
    .venv/bin/python bench/quantize_layers.py --models resnet20,tiny-text --rounds 5   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from search_spaces import apply_policy, build_space  # noqa: E402
from search_spaces.calibrate import recalibrate_bn  # noqa: E402
from search_spaces.measure import time_interleaved  # noqa: E402
from search_spaces.quantize import OrtModule, quantize_onnx, weight_layers  # noqa: E402

CNN_SHAPE = (3, 32, 32)


def cnn(name: str) -> nn.Module:
    """``resnet56`` or ``resnet56@0.5`` (pruned uniformly by that ratio): random weights, the
    BatchNorm statistics estimated on random batches (activations of a sane scale, as trained
    models have, rather than growing with depth)."""
    from search_spaces.models import resnet_cifar

    base, _, ratio = name.partition("@")
    model = getattr(resnet_cifar, base)().eval()
    if ratio:
        x = torch.zeros(1, *CNN_SHAPE)
        space = build_space(model, x, round_to=1)
        policy = {g.name: float(ratio) for g in space.groups}
        model = apply_policy(model, space, policy, example_input=x).eval()
    g = torch.Generator().manual_seed(1)
    recalibrate_bn(model, [torch.randn(64, *CNN_SHAPE, generator=g) for _ in range(4)])
    return model


def text(name: str) -> nn.Module:
    if name == "minilm":
        from search_spaces.transformers.model import all_minilm_l6_v2

        return all_minilm_l6_v2()
    from tests.search_spaces.tiny_text import tiny_embedder

    return tiny_embedder(initializer_range=0.3)  # type: ignore[no-untyped-call,arg-type]


def bench(name: str, tmp: Path, args: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    src = tmp / f"{name}.onnx"
    if name.startswith("resnet"):
        from search_spaces.bundle import export_onnx

        model, scheme = cnn(name), "static"
        export_onnx(model, torch.zeros(1, *CNN_SHAPE), src)
        calibration = [rng.standard_normal((args.calib_size, *CNN_SHAPE), dtype=np.float32)
                       for _ in range(args.calib_batches)]
        held_out = torch.from_numpy(rng.standard_normal((256, *CNN_SHAPE), dtype=np.float32))
        example = held_out[:1]
    else:
        from search_spaces.transformers.bundle import export_onnx as export_text

        model, scheme, calibration = text(name), "dynamic", []
        vocab = int(model.backbone.config.vocab_size)  # type: ignore[union-attr,arg-type]
        lo = min(1000, vocab // 4)  # past the special tokens
        held_out = torch.randint(lo, vocab, (32, args.seq))
        example = held_out[:1]
        export_text(model, example, src)
    layers = list(weight_layers(src))
    files = {"fp32": src}
    seconds = {"fp32": 0.0}
    variants = (("int8 all", layers), ("int8 first half", layers[:len(layers) // 2]),
                ("int8 every other", layers[::2]))
    for label, chosen in variants:
        dst = tmp / f"{name}-{label.replace(' ', '-')}.onnx"
        t0 = time.perf_counter()
        quantize_onnx(src, dst, int8_layers=chosen, scheme=scheme, calibration=calibration)  # type: ignore[arg-type]
        seconds[label] = time.perf_counter() - t0
        files[label] = dst
    modules = {k: OrtModule(p, threads=1) for k, p in files.items()}
    with torch.inference_mode():
        outs = {k: m(held_out) for k, m in modules.items()}
    times = time_interleaved([lambda m=m: m(example) for m in modules.values()],  # type: ignore[misc]
                             warmup=3, rounds=args.rounds, repeat=3, reduce="min")
    ref, ref_ms = outs["fp32"], statistics.median(times[0])
    rows = []
    for (label, path), t in zip(files.items(), times, strict=True):
        out, ms = outs[label], statistics.median(t)
        agree = (f"{(out.argmax(1) == ref.argmax(1)).float().mean().item():.3f}"
                 if scheme == "static" else "-")
        rows.append(f"| {name} | {label} | {path.stat().st_size / 1e6:.2f} | "
                    f"{(out - ref).abs().max().item():.4f} | "
                    f"{F.cosine_similarity(out, ref).mean().item():.4f} | {agree} | "
                    f"{ms:.3f} | {ms / ref_ms:.2f} | {seconds[label]:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet56,resnet56@0.5,minilm",
                    help="comma-separated: resnet20|resnet56[@ratio], tiny-text, minilm")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--seq", type=int, default=128, help="text: tokens per input")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | precision | MB | max abs diff | cosine | top-1 agree | ms (median) | × fp32 | quantize s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="autoprune-bench-quant-") as tmp:
        for name in args.models.split(","):
            for row in bench(name.strip(), Path(tmp), args):
                print(row, flush=True)


if __name__ == "__main__":
    main()
