"""Data files for the offline tiny models (tokenizer corpus, chat template)."""
