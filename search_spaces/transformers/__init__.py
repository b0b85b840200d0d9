"""Transformer encoders (BERT family) as search spaces: attention heads and MLP widths per layer.

``model``: :class:`SentenceEmbedder` (token ids -> pooled, normalised sentence embeddings) built
from a Hugging Face model directory, an installed package that ships one, or a ``BertConfig``.
``space``: the analytic :class:`~search_spaces.space.SearchSpace` (group kinds ``heads``,
``mlp``, optional ``hidden``; MACs include q·kᵀ and attention·v). ``prune``: channel surgery
with Torch-Pruning's pruning functions, heads removed whole. ``bundle``: artifacts rebuilt
without pickle. Imports ``transformers`` lazily: nothing here loads unless a text job runs.
"""
