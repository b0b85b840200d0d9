"""Artifacts of a pruned sentence embedder, rebuilt without pickle.

``BertConfig`` has one head count and one MLP width for every layer, so a pruned model saved
with ``save_pretrained`` cannot be loaded by ``AutoModel.from_pretrained`` (size mismatches).
The bundle therefore holds:

- ``architecture.json``: ``kind: "sentence-embedder"``, the dense ``config`` (a plain dict),
  the per-layer ``sizes`` (``heads``, ``intermediate`` of the kept layers; ``hidden``; and
  ``removed``, the indices of the layers a depth policy removed, when there are any) and pooling
  settings; from a job with ``search_space.depth``, ``kept_layers`` (the kept encoder layers'
  module names);
- ``model.safetensors``: the pruned weights (the embedder's state dict);
- the tokenizer files (``tokenizer.json``, ``vocab.txt``...), written by the tokenizer itself;
- ``model.onnx`` (input ``input_ids``: int64 ``batch × sequence``, both axes dynamic; output
  ``sentence_embedding``: ``batch × hidden``, pooled and normalised), checked in onnxruntime.

:func:`load_sentence_embedder` rebuilds the dense architecture from ``config``, shrinks each
layer to its sizes (the same surgery as pruning), then loads the weights strictly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.transformers.model import (
    HIDDEN_GROUP,
    SentenceEmbedder,
    blocks,
    from_config,
    layer_prefix,
    remove_layers,
)
from search_spaces.transformers.prune import architecture_of, prune_transformer_to_counts

FORMAT = 1
KIND = "sentence-embedder"


def describe(model: SentenceEmbedder) -> dict[str, Any]:
    """The ``architecture.json`` of a (pruned) embedder."""
    return {
        "format": FORMAT,
        "kind": KIND,
        "config": model.backbone.config.to_dict(),
        "sizes": architecture_of(model),
        "pad_token_id": model.pad_token_id,
        "normalize": model.normalize,
    }


def rebuild(arch: dict[str, Any], *, tokenizer_dir: str | None = None) -> SentenceEmbedder:
    """The architecture (random weights) an ``architecture.json`` describes."""
    from transformers import BertConfig

    if arch.get("format") != FORMAT or arch.get("kind") != KIND:
        raise ValueError(f"architecture.json: not a {KIND} description of format {FORMAT}")
    config = BertConfig.from_dict(dict(arch["config"]))
    model = from_config(config, tokenizer_dir=tokenizer_dir, normalize=bool(arch["normalize"]))
    sizes = arch["sizes"]
    removed = [int(i) for i in sizes.get("removed", ())]
    # a depth search's bundle also names the layers it kept: none of them may be a removed one
    clash = {layer_prefix(i) for i in removed} & set(arch.get("kept_layers", ()))
    if clash:
        raise ValueError(f"architecture.json: layers both kept and removed: {sorted(clash)}")
    remove_layers(model, removed)
    bl = blocks(model)
    if len(sizes["heads"]) != len(bl):
        raise ValueError("architecture.json: sizes do not match the config's number of layers")
    kept: dict[str, int] = {HIDDEN_GROUP: int(sizes["hidden"])}
    for b, heads, inter in zip(bl, sizes["heads"], sizes["intermediate"], strict=True):
        kept[b.heads_group] = int(heads)
        kept[b.mlp_group] = int(inter)
    return prune_transformer_to_counts(model, kept, criterion="random").eval()


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["input_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "sentence_embedding": {0: "batch"}},
            opset_version=17,
        )


def save_sentence_embedder(
    directory: str | Path,
    model: SentenceEmbedder,
    *,
    example: torch.Tensor,
    onnx: bool = True,
    torchscript: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Writes weights, architecture, tokenizer (and ONNX / TorchScript); returns file -> what."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    files: dict[str, str] = {}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    files["model.safetensors"] = "weights"
    (out / "architecture.json").write_text(json.dumps({**describe(model), **(extra or {})}, indent=2))
    files["architecture.json"] = "architecture"
    if model.tokenizer_dir is not None:
        for name in model.tokenizer().save_pretrained(str(out)):
            files[Path(name).name] = "tokenizer"
    if onnx:
        export_onnx(model, example, out / "model.onnx")
        files["model.onnx"] = "onnx"
    if torchscript:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(model, example, check_trace=False).save(str(out / "model.ts"))
        files["model.ts"] = "torchscript"
    return files


def load_sentence_embedder(directory: str | Path) -> SentenceEmbedder:
    """A saved pruned embedder, weights loaded strictly; its tokenizer is the bundle's own.

    Example::

        from search_spaces.transformers.bundle import load_sentence_embedder
        model = load_sentence_embedder("artifacts/<job>/rank-1")
        tok = model.tokenizer()
        ids = tok(["A sentence.", "Another one."], padding=True, return_tensors="pt")["input_ids"]
        embeddings = model(ids)  # (2, hidden), L2-normalised
    """
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        arch = json.loads((d / "architecture.json").read_text())
    except FileNotFoundError:
        raise ValueError(f"bundle {str(d)!r}: no architecture.json") from None
    has_tokenizer = (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()
    model = rebuild(arch, tokenizer_dir=str(d) if has_tokenizer else None)
    model.load_state_dict(load_file(str(d / "model.safetensors")), strict=True)
    return model.eval()


def onnx_max_diff(path: Path, model: nn.Module, inputs: list[torch.Tensor]) -> float:
    """Largest |onnxruntime - model| over ``inputs`` (of different batch and sequence sizes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for ids in inputs:
            want = model.eval()(ids).numpy()
            (got,) = sess.run(["sentence_embedding"], {"input_ids": ids.numpy()})
            worst = max(worst, float(abs(got - want).max()))
    return worst
