"""The built-in docstrings corpus: real English prose from the stdlib, deterministic splits."""

from __future__ import annotations

import pytest

from search_spaces.datasets.text import docstring_sentences, is_prose, load_docstrings


def test_prose_filter_keeps_sentences_and_drops_code() -> None:
    doc = """Return the number of items in the container.

    >>> len([1, 2])
    2

    Use ``foo()`` to reset it. The object keeps a reference to its parent window."""
    assert docstring_sentences(doc) == [
        "Return the number of items in the container.",
        "The object keeps a reference to its parent window.",
    ]
    assert not is_prose("x = foo(bar) if baz else qux, which is fine.")
    assert not is_prose("Too short here.")


@pytest.mark.slow
def test_docstrings_corpus_is_large_deduplicated_and_seeded(tmp_path) -> None:
    a = load_docstrings(seed=0, cache_dir=tmp_path)
    b = load_docstrings(seed=0, cache_dir=tmp_path)  # from the cache file
    c = load_docstrings(seed=1, cache_dir=tmp_path)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.val != c.val
    everything = a.train + a.val + a.test
    assert len(everything) > 3000 and len(set(everything)) == len(everything)
    assert all(is_prose(s) for s in everything[:500])
    assert len(a.test) == len(everything) // 10
