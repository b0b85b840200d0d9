"""Two fixed costs the test suite and every job pay, each measured both ways in one run, interleaved:

* ``ray.init`` of an embedded local Ray with Ray's default object store (30 % of the host's
  memory, reserved in /dev/shm) and with ``workers.pool.LOCAL_OBJECT_STORE_BYTES``, each in a fresh
  process (what a controller's Ray driver does);
* SGD steps of resnet20 on digits (batch 64, one thread) with the weights in the default NCHW
  layout and in channels-last (what ``search_spaces.training.sgd_steps`` does on the CPU).

Prints each round and the medians. docs/benchmarks.md, "Channels-last training and Ray's object store".

    .venv/bin/python bench/startup_costs.py --rounds 3 --steps 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

RAY_INIT = """
import os, sys, time
os.environ.setdefault("RAY_AUTH_MODE", "disabled"); os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray
kw = {} if sys.argv[1] == "default" else {"object_store_memory": int(sys.argv[1])}
t = time.perf_counter()
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
print(time.perf_counter() - t)
ray.shutdown()
"""


def ray_init_seconds(store: str) -> float:
    out = subprocess.run([sys.executable, "-c", RAY_INIT, store], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(out.stdout.strip().splitlines()[-1])


def sgd_seconds(channels_last: bool, steps: int) -> float:
    import torch

    from search_spaces.datasets.digits import load_digits_splits
    from search_spaces.zoo import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # what sgd_steps' probe leaves it in
    x, y = load_digits_splits().train.tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    t = time.perf_counter()
    for i in range(steps):
        b = slice((i * 64) % (len(x) - 64), (i * 64) % (len(x) - 64) + 64)
        loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    import torch

    from workers.pool import LOCAL_OBJECT_STORE_BYTES

    torch.set_num_threads(1)
    times: dict[str, list[float]] = {}
    for r in range(args.rounds):
        row = {"ray.init, default store": ray_init_seconds("default"),
               f"ray.init, {LOCAL_OBJECT_STORE_BYTES >> 20} MiB store": ray_init_seconds(str(LOCAL_OBJECT_STORE_BYTES)),
               f"{args.steps} SGD steps, NCHW": sgd_seconds(False, args.steps),
               f"{args.steps} SGD steps, channels-last": sgd_seconds(True, args.steps)}
        for k, v in row.items():
            times.setdefault(k, []).append(v)
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    for k, v in times.items():
        print(f"median {k}: {statistics.median(v):.2f} s")


if __name__ == "__main__":
    main()
