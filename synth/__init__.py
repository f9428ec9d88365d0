"""Everything up to the corpora: data preparation, Semantic IDs, teacher synthesis."""
