"""File formats in one place: corpora, queries, qrels and teacher scores (`formats`), TREC runs (`runs`)."""
