"""Text corpora, tokenizers and sequence pipelines for language models."""
