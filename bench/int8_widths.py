"""What int8 buys a CNN once it is pruned: each model dense and uniformly pruned, fp32 and int8,
all its files timed together, as a ratio to its dense fp32 file.

For each model (a zoo name, or ``resnet<depth>x<widen>``: a CIFAR ResNet ``widen`` times as wide)
with random weights (BatchNorm statistics estimated on random batches) on a greyscale 28×28
input (Fashion-MNIST's), every ratio of ``--ratios`` prunes every group uniformly (``round_to=1``:
some fp32 widths then miss onnxruntime's 16-channel blocks), the file is exported and quantized by
:func:`search_spaces.quantize.quantize_onnx` (static QDQ, per-channel) on every layer, and — with
``--no-depthwise`` — on every layer but the depthwise convolutions. All files of one model are run
in onnxruntime (batch 1, 1 thread) round-robin (``time_interleaved``, the fastest of 3 calls per
round, the median over rounds). docs/benchmarks.md, "wide_resnet20_2 on Fashion-MNIST at 0.3":

    .venv/bin/python bench/int8_widths.py --models resnet20x1,resnet20x2,resnet20x4 --ratios 0.3,0.5,0.7,0.8
    .venv/bin/python bench/int8_widths.py --models mobilenetv2 --ratios 0.3,0.5,0.7 --no-depthwise \\
        --rounds 20 --calib-batches 2 --calib-size 32
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/

from search_spaces import apply_policy, build_space  # noqa: E402
from search_spaces.bundle import export_onnx  # noqa: E402
from search_spaces.calibrate import recalibrate_bn  # noqa: E402
from search_spaces.measure import time_interleaved  # noqa: E402
from search_spaces.quantize import OrtModule, quantize_onnx, weight_layers  # noqa: E402

SHAPE = (1, 28, 28)


def build(name: str) -> nn.Module:
    wide = re.fullmatch(r"resnet(\d+)x(\d+)", name)
    if wide:
        from search_spaces.models.resnet_cifar import ResNetCifar

        return ResNetCifar(int(wide[1]), 10, SHAPE[0], widen=int(wide[2])).eval()
    from search_spaces.zoo import build_model

    return build_model(name, num_classes=10, in_channels=SHAPE[0]).eval()


def files(name: str, ratio: float, tmp: Path, args: argparse.Namespace) -> dict[str, Path]:
    x = torch.zeros(1, *SHAPE)
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randn(args.calib_size, *SHAPE, generator=g) for _ in range(args.calib_batches)]
    model = build(name)
    if ratio:
        space = build_space(model, x, round_to=1)
        model = apply_policy(model, space, {gr.name: ratio for gr in space.groups}, example_input=x).eval()
    recalibrate_bn(model, calibration)
    src = tmp / f"{name}-{ratio}.onnx"
    export_onnx(model, x, src)
    layers = list(weight_layers(src))
    depthwise = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    variants = {"int8": layers}
    if args.no_depthwise:
        variants["int8, depthwise fp32"] = [n for n in layers if n not in depthwise]
    out = {"fp32": src}
    for label, chosen in variants.items():
        dst = tmp / f"{name}-{ratio}-{label.replace(', ', '-').replace(' ', '-')}.onnx"
        quantize_onnx(src, dst, int8_layers=chosen, scheme="static", calibration=[c.numpy() for c in calibration])
        out[label] = dst
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20x1,resnet20x2,resnet20x4")
    ap.add_argument("--ratios", default="0.3,0.5,0.7,0.8", help="uniform pruning ratios beside dense")
    ap.add_argument("--no-depthwise", action="store_true", help="also int8 on all but depthwise convolutions")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--calib-size", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="autoprune-bench-int8-") as tmp:
        for name in args.models.split(","):
            paths = {}
            for ratio in [0.0] + [float(r) for r in args.ratios.split(",")]:
                for label, path in files(name, ratio, Path(tmp), args).items():
                    paths[f"pruned {ratio:g}, {label}"] = path
            modules = [OrtModule(p, threads=1) for p in paths.values()]
            example = torch.randn(1, *SHAPE)
            with torch.inference_mode():
                times = time_interleaved([lambda m=m, x=example: m(x) for m in modules],  # type: ignore[misc]
                                         warmup=3, rounds=args.rounds, repeat=3, reduce="min")
            dense = statistics.median(times[0])
            print(f"{name}: dense fp32 {dense:.3f} ms")
            for label, t in zip(paths, times, strict=True):
                print(f"  {label}: {statistics.median(t) / dense:.3f}", flush=True)


if __name__ == "__main__":
    main()
