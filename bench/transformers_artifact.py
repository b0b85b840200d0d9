"""Checks a pruned sentence-embedder bundle against the dense all-MiniLM-L6-v2 (issue 13, done-when).

Loads the bundle without pickle (``load_sentence_embedder``), re-measures its latency against the
dense model interleaved (batch 1 × ``--seq-len`` real tokens, 1 thread, ``--rounds`` rounds,
medians), and reports the mean cosine to the dense embeddings on (a) the ``docstrings`` test split
(seed 0, the job's) and (b) English text from elsewhere: prose sentences from the package
descriptions (``*.dist-info/METADATA``) of the installed Python packages — not docstrings, not seen
in the search or the distillation. Also runs the bundle's ONNX model in onnxruntime.

    .venv/bin/python bench/transformers_artifact.py ARTIFACT_DIR
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import sysconfig
from pathlib import Path

import torch

# replace (not prepend) the script's folder, which holds a transformers.py
sys.path[0] = str(Path(__file__).resolve().parents[1])


def other_english(limit: int) -> list[str]:
    """Prose sentences from installed packages' long descriptions (README text on PyPI)."""
    from search_spaces.datasets.text import docstring_sentences

    site = Path(sysconfig.get_paths()["purelib"])
    found: dict[str, None] = {}
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(encoding="utf-8", errors="ignore")
        body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
        body = re.sub(r"[#*`\[\]()]", " ", body)  # markdown decoration
        for s in docstring_sentences(body):
            found.setdefault(s, None)
    return list(found)[:limit]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--other", type=int, default=500, help="sentences of other English text")
    ap.add_argument("--cache-dir", default=".cache/autoprune")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from search_spaces.data import load_dataset
    from search_spaces.transformers.bundle import load_sentence_embedder, onnx_max_diff
    from search_spaces.transformers.model import all_minilm_l6_v2
    from workers.kinds.text.scoring import embed, length_batches, mean_cosine, ranking_fidelity
    from workers.latency import measure_pair

    pruned = load_sentence_embedder(args.bundle)
    dense = all_minilm_l6_v2()
    tok = pruned.tokenizer()
    corpus = load_dataset("docstrings", seed=0, cache_dir=args.cache_dir)
    result: dict[str, object] = {}
    for name, texts in (("docstrings_test", corpus.test), ("other_english", other_english(args.other))):
        ids = tok(texts, padding="max_length", truncation=True, max_length=args.seq_len, return_tensors="pt")["input_ids"]
        batches = length_batches(ids, 0)
        d, p = embed(dense, batches, torch.device("cpu")), embed(pruned, batches, torch.device("cpu"))
        result[name] = {"sentences": len(texts), "cosine": mean_cosine(p, d), **ranking_fidelity(p, d)}
    example = tok(" ".join(corpus.val[:400]), truncation=True, max_length=args.seq_len, return_tensors="pt")["input_ids"]
    lat = measure_pair(dense, pruned, example, threads=1, rounds=args.rounds)
    result["latency"] = {"ratio": lat.ratio, "pruned_ms": lat.ms, "dense_ms": lat.dense_ms, "spread_ms": lat.spread_ms, "rounds": lat.rounds}
    onnx = Path(args.bundle) / "model.onnx"
    if onnx.is_file():
        result["onnx_max_abs_diff"] = onnx_max_diff(onnx, pruned, [example, batches[0][:4]])
    result["sizes"] = json.loads((Path(args.bundle) / "architecture.json").read_text())["sizes"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
