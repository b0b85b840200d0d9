"""Text datasets for sentence embedders: ``docstrings`` (built in, offline) and ``text_lines``.

Loaders return a :class:`TextCorpus` (sentences per split); the task tokenizes it with the
model's own tokenizer into :class:`TextSplits`, whose splits hold ``(token ids, 0)`` rows padded
to a fixed maximum length (``target.seq_len``) — labels are unused: the metric compares the
pruned model's embeddings with the dense model's.

``docstrings``: English sentences from the docstrings of the installed Python standard library,
read with ``ast`` from the source files (no module is imported, so nothing runs), split into
sentences, filtered to prose, deduplicated, then shuffled with the seed and split 80/10/10.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import random
import re
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from search_spaces.datasets.common import DataSplits
from search_spaces.datasets.local import confine


@dataclass
class TextCorpus:
    """Sentences per split, before tokenization."""

    train: list[str]
    val: list[str]
    test: list[str]
    name: str = ""

    def tokenize(self, tokenizer: Any, max_length: int) -> TextSplits:
        def ds(texts: list[str]) -> TensorDataset:
            ids = tokenizer(
                texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            )["input_ids"].long()
            return TensorDataset(ids, torch.zeros(len(texts), dtype=torch.long))

        return TextSplits(
            train=ds(self.train),
            val=ds(self.val),
            test=ds(self.test),
            input_shape=(max_length,),
            num_classes=0,
            name=self.name,
            texts={"train": self.train, "val": self.val, "test": self.test},
            pad_token_id=int(tokenizer.pad_token_id or 0),
        )


@dataclass
class TextSplits(DataSplits):
    """Token-id splits (padded to ``input_shape[0]``) and the sentences they came from."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    pad_token_id: int = 0

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return self.train.tensors[0][:batch].clone()


def split_texts(texts: Sequence[str], *, seed: int, name: str) -> TextCorpus:
    """Deduplicates (keeping first occurrences), shuffles with ``seed``, splits 80/10/10."""
    unique = list(dict.fromkeys(t.strip() for t in texts if t.strip()))
    if len(unique) < 10:
        raise ValueError(f"dataset {name!r}: needs at least 10 distinct texts, got {len(unique)}")
    random.Random(seed).shuffle(unique)
    n_test = n_val = max(1, len(unique) // 10)
    return TextCorpus(
        train=unique[n_test + n_val :],
        val=unique[n_test : n_test + n_val],
        test=unique[:n_test],
        name=name,
    )


# --- docstrings ---------------------------------------------------------------------------------
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages",
              "__pycache__", "turtledemo", "ensurepip", "pydoc_data"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_NOT_PROSE = re.compile(r"[`<>{}\[\]=_|\\#@$%^*~]|\.\.\.|::|https?:|\w\.\w+\(|\(\)")


def is_prose(sentence: str) -> bool:
    """A real English sentence: 6-40 words, capitalised, ends with '.', no code-like symbols."""
    words = sentence.split()
    if not 6 <= len(words) <= 40 or not sentence[0].isupper() or not sentence.endswith("."):
        return False
    if _NOT_PROSE.search(sentence):
        return False
    chars = [c for c in sentence if not c.isspace()]
    letters = sum(c.isalpha() for c in chars)
    return letters >= 0.85 * len(chars)


def docstring_sentences(docstring: str) -> list[str]:
    out: list[str] = []
    for para in re.split(r"\n\s*\n", docstring):
        lines = [ln.strip() for ln in para.splitlines()]
        if any(ln.startswith((">>>", "...", "-", "*", ":")) for ln in lines):
            continue  # doctest, lists, field lists: not running prose
        text = " ".join(ln for ln in lines if ln)
        out.extend(s for s in _SENTENCE_END.split(text) if is_prose(s))
    return out


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return files


@functools.lru_cache(maxsize=1)
def stdlib_docstring_sentences() -> tuple[str, ...]:
    """Every prose sentence of the stdlib's module, class and function docstrings, sorted."""
    found: set[str] = set()
    for path in _stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    found.update(docstring_sentences(doc))
    return tuple(sorted(found))


def _cached_sentences(cache_dir: str | os.PathLike[str] | None) -> list[str]:
    """The stdlib sentences, read from (or written to) ``cache_dir``: parsing them is slow."""
    if cache_dir is None:
        return list(stdlib_docstring_sentences())
    stdlib = sysconfig.get_paths()["stdlib"]
    key = hashlib.sha1(f"{stdlib}|{sys.version}|{_FORMAT}".encode()).hexdigest()[:12]
    file = Path(cache_dir) / "text" / f"docstrings-{key}.json"
    try:
        return list(json.loads(file.read_text()))
    except (OSError, ValueError):
        pass
    sentences = list(stdlib_docstring_sentences())
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sentences))
    tmp.replace(file)
    return sentences


_FORMAT = 1  # bump when the sentence filter changes


def load_docstrings(
    *,
    seed: int = 0,
    max_sentences: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **_: object,
) -> TextCorpus:
    """The ``docstrings`` corpus; ``max_sentences`` keeps a seeded subset (before splitting)."""
    sentences = _cached_sentences(cache_dir)
    if max_sentences is not None and max_sentences < len(sentences):
        sentences = random.Random(seed).sample(sentences, max_sentences)
        sentences.sort()
    return split_texts(sentences, seed=seed, name="docstrings")


# --- text_lines ---------------------------------------------------------------------------------
def read_text_lines(path: Path) -> list[str]:
    """One text per line (UTF-8), or JSON lines (``.jsonl``) whose ``text`` field is the text."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"dataset.path {path.name!r}: not UTF-8 text ({exc.reason})") from None
    if path.suffix.lower() != ".jsonl":
        return [ln.strip() for ln in raw.splitlines() if ln.strip()]
    texts = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"dataset.path {path.name!r} line {i}: not JSON ({exc.msg})") from None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise ValueError(f"dataset.path {path.name!r} line {i}: no string field 'text'")
        texts.append(text)
    return texts


def load_text_lines(
    *, path: str | None = None, roots: Sequence[str] = (), seed: int = 0, **_: object
) -> TextCorpus:
    file = confine(path, roots)
    if not file.is_file():
        raise ValueError(f"dataset.path {str(path)!r}: expected a text or .jsonl file")
    return split_texts(read_text_lines(file), seed=seed, name="text_lines")
