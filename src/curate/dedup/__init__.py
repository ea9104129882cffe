"""Corpus-wide deduplication stages, built on the runner's shuffle rounds."""
