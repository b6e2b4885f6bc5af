"""SeqIO vocabularies, sources, preprocessors, tasks, mixtures and feature converters for retrieval."""
