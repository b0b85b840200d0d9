"""Issue 22's recovery choice for transformers: the final embedding alone, or the kept layers too.

Distils all-MiniLM-L6-v2 pruned by each given policy (a job artifact's ``policy.json``: widths and
``@keep`` removals) for ``--steps`` (213 = one epoch of the docstrings training split at batch 32,
what a job's finalize runs) with ``finalize.distil_layers`` = each of ``--weights`` (0: the
embedding only), the same batches, seed and learning rate for every row, and prints the test
split's mean cosine to the dense embeddings (what a job reports as ``test_quality``). Quality
only: no latency is measured, so it may run beside other work.

    .venv/bin/python bench/layer_distil.py ART/rank-1/policy.json ART/rank-2/policy.json \\
        --weights 0,0.1,1 --out docs/bench/layer-distil.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", nargs="+", type=Path)
    ap.add_argument("--weights", default="0,0.1,1")
    ap.add_argument("--steps", type=int, default=213)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=".cache/autoprune")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from search_spaces.transformers.model import blocks
    from workers.evaluator import Evaluator
    from workers.kinds.text.scoring import embed, length_batches, mean_cosine
    from workers.spec import JobSpec
    from workers.task import WorkerSettings, load_task

    spec = JobSpec.model_validate({
        "model": {"zoo": "all-minilm-l6-v2"}, "dataset": {"name": "docstrings"},
        "metric": "embedding_cosine", "budget": {"latency_ratio": 0.3},
        "target": {"runtime": "onnxruntime", "seq_len": 128, "threads": 1},
        "search_space": {"depth": True}, "workers": 0,
    })
    task = load_task(spec, WorkerSettings(cache_dir=Path(args.cache_dir)))
    scoring = Evaluator(task, latency_rounds=0).scoring
    test = length_batches(task.splits.test.tensors[0], scoring.pad)
    dense = embed(scoring.ctx.dense, test, torch.device("cpu"))
    rows = []
    print(f"{'policy':<40} {'kept layers':<14} {'weight':>6} {'seed':>4} {'test cosine':>11} {'s':>5}")
    for path in args.policies:
        policy = json.loads(path.read_text())
        for seed in (int(s) for s in args.seeds.split(",")):
            for weight in (float(w) for w in args.weights.split(",")):
                t0 = time.perf_counter()
                torch.manual_seed(seed)  # dropout
                model = scoring.prune(policy, steps=args.steps, layer_weight=weight)
                cosine = mean_cosine(embed(model, test, torch.device("cpu")), dense)
                kept = [b.index for b in blocks(model)]
                row = {"policy": str(path), "kept_layers": kept, "weight": weight, "seed": seed,
                       "test_cosine": cosine, "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(f"{str(path)[-40:]:<40} {','.join(map(str, kept)):<14} {weight:>6} {seed:>4} "
                      f"{cosine:>11.4f} {row['seconds']:>5.0f}", flush=True)
                if args.out:
                    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
