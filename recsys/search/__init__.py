"""Search: the ``searches``, ``query_stats`` and ``query_suggestions`` tables, retrieval
(BM25 and text embeddings), the learned ranker and query suggestions."""
